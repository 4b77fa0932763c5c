"""The numpy components of the hello-numpy apps, as built-ins both apps name: the trainer ("trains" by adding
`delta`), the persistor (the 3x3 model, saved as models/server.npy) and the cross-site validator."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.evaluator import ModelEvaluator
from fl_broker.fl.executor import Executor
from fl_broker.fl.model import ModelLearnable
from fl_broker.fl.persistor import ModelPersistor
from fl_broker.wire.messages import DXO, DataKind, MetaKey, ReturnCode, Shareable, from_shareable, make_reply

log = logging.getLogger(__name__)

MODEL_KEY = "numpy_key"
LOCAL_MODEL = "model/best_numpy.npy"  # a site's last trained weights, in its run folder
INITIAL = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def initial_vector(size: int) -> np.ndarray:
    """An initial model of `size` float32 weights, 0, 1, ..., 250, 0, 1, ...: values that differ along the
    vector, so a misplaced chunk shows."""
    return (np.arange(size) % 251).astype(np.float32)


class NPModelPersistor(ModelPersistor):
    """Starts from [[1,2,3],[4,5,6],[7,8,9]] (float32), or `initial_vector(size)` when `size` is set (scale tests,
    benchmarks); reads the saved model instead only when the context's start round is > 0 (a resumed run or a
    configured start_round), as FLARE's persistors do."""

    def __init__(self, model_dir: str = "models", model_name: str = "server.npy", size: int = 0) -> None:
        self.model_dir = model_dir
        self.model_name = model_name
        self.size = size

    def load_model(self, context: RunContext) -> ModelLearnable:
        path = context.run_dir / self.model_dir / self.model_name
        if context.start_round > 0 and path.is_file():
            log.info("loading the saved model %s (start round %d)", path, context.start_round)
            return {MODEL_KEY: np.load(path, allow_pickle=False)}
        if self.size:
            return {MODEL_KEY: initial_vector(self.size)}
        return {MODEL_KEY: np.array(INITIAL, dtype=np.float32)}

    def save_model(self, model: ModelLearnable, context: RunContext) -> None:
        folder = context.run_dir / self.model_dir
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (self.model_name + ".tmp.npy")
        np.save(tmp, np.asarray(model[MODEL_KEY]))
        tmp.replace(folder / self.model_name)  # atomic: a crash never leaves half a model
        log.info("saved the global model to %s", folder / self.model_name)


class NPTrainer(Executor):
    """Adds `delta` to the `numpy_key` weights of each `train` task, after `sleep_time` seconds, keeps them as
    the site's local model (run_N/model/best_numpy.npy), and reports two metrics with them: the mean of the
    weights it sends and the size (L2 norm) of its update."""

    def __init__(
        self, delta: float = 1, sleep_time: float = 0, train_task_name: str = "train", report_metrics: bool = True
    ) -> None:
        self.delta = delta
        self.sleep_time = sleep_time
        self.train_task_name = train_task_name
        # off under secure aggregation: metrics travel in the clear, and the weights' mean would tell the
        # server what the masks hide
        self.report_metrics = report_metrics

    def execute(self, task_name: str, shareable: Shareable, context: RunContext, abort_signal: Signal) -> Shareable:
        if task_name != self.train_task_name:
            return make_reply(ReturnCode.TASK_UNKNOWN)
        try:
            dxo = from_shareable(shareable)
        except ValueError:
            log.error("task carries no DXO")
            return make_reply(ReturnCode.BAD_TASK_DATA)
        weights = dxo.data.get(MODEL_KEY)
        if dxo.data_kind != DataKind.WEIGHTS or not isinstance(weights, np.ndarray):
            log.error("expected WEIGHTS with %r, got %s with %s", MODEL_KEY, dxo.data_kind.value, sorted(dxo.data))
            return make_reply(ReturnCode.BAD_TASK_DATA)
        if abort_signal.wait(self.sleep_time) if self.sleep_time > 0 else abort_signal.triggered:
            return make_reply(ReturnCode.TASK_ABORTED)
        weights += self.delta  # in place: arrays handed to executors are writable
        update_norm = abs(float(self.delta)) * float(np.sqrt(weights.size))  # the norm of adding delta everywhere
        shown = weights.tolist() if weights.size <= 100 else f"shape {weights.shape}, mean {float(weights.mean()):g}"
        log.info("round %s: new weights %s", shareable.get_header("current_round"), shown)
        local = context.run_dir / LOCAL_MODEL
        local.parent.mkdir(parents=True, exist_ok=True)
        overwrite_npy(local, weights)
        result = DXO(data_kind=DataKind.WEIGHTS, data={MODEL_KEY: weights})
        result.set_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND, 1)
        if self.report_metrics:
            result.set_meta_prop(MetaKey.METRICS, {"weight_mean": float(weights.mean()), "update_norm": update_norm})
        return result.to_shareable()


def overwrite_npy(path: Path, array: np.ndarray) -> None:
    """Write `array` to `path` as np.save does (the same bytes), over the file's old content instead of
    truncating it first. Truncating an existing file was most of a 3x3 round's task on a site, on the
    round's critical path: np.save 190-280 us of wall-clock, 65-85 us of CPU on this machine; this 12-25 us.
    A tail left from a longer array is cut off. A kill halfway leaves a file as unusable as np.save's would
    (the site trains the task again and rewrites it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)  # no O_TRUNC (the mode is open()'s, before the umask)
    with os.fdopen(fd, "wb") as file:
        np.lib.format.write_array(file, np.asanyarray(array), allow_pickle=False)
        file.truncate()


class NPValidator(ModelEvaluator):
    """Cross-site evaluation on a site: submits the weights the site last trained, and "validates" a model by
    comparing it with the site's data, a 3x3 target of the site's number times 10: `weight_mean` and
    `mean_abs_error`."""

    def submit_model(self, context: RunContext, abort_signal: Signal) -> ModelLearnable | None:
        path = context.run_dir / LOCAL_MODEL
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
