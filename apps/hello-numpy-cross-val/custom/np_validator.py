"""hello-numpy-cross-val's evaluator: submits the weights the site last trained, and "validates" a model by
comparing it with the site's data (a 3x3 target that differs per site: the site's number times 10)."""

from __future__ import annotations

import logging
import re

import numpy as np

from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.evaluator import ModelEvaluator
from fl_broker.fl.model import ModelLearnable

log = logging.getLogger(__name__)

MODEL_KEY = "numpy_key"


class NPValidator(ModelEvaluator):
    """Metrics of a model on this site: `weight_mean` and `mean_abs_error` against the site's target."""

    def submit_model(self, context: RunContext, abort_signal: Signal) -> ModelLearnable | None:
        path = context.run_dir / "model" / "best_numpy.npy"
        if not path.is_file():
            log.error("no local model to submit: %s does not exist", path)
            return None
        return {MODEL_KEY: np.load(path, allow_pickle=False)}

    def validate(
        self, model: ModelLearnable, model_owner: str, context: RunContext, abort_signal: Signal
    ) -> dict[str, float]:
        weights = np.asarray(model[MODEL_KEY], dtype=np.float64)
        target = np.full(weights.shape, 10.0 * _site_number(context.site_name))
        metrics = {"weight_mean": float(weights.mean()), "mean_abs_error": float(np.abs(weights - target).mean())}
        log.info("validated the model of %s: %s", model_owner, metrics)
        return metrics


def _site_number(site: str) -> int:
    found = re.search(r"(\d+)$", site)
    return int(found.group(1)) if found else 1
