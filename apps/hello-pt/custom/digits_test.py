"""hello-pt's last workflow: tests the final global model on the held-out test images, on the server, and
reports it in the log and in `run_N/global_test.json` (accuracy, loss, samples, the model file)."""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

from fl_broker.fl.workflow import ComponentArg, Workflow, WorkflowRuntime
from fl_broker.pt.classifier import evaluate
from fl_broker.pt.components import ComponentSpec, build_component
from fl_broker.pt.persistor import PTFileModelPersistor

log = logging.getLogger(__name__)


class GlobalModelTest(Workflow):
    """Loads the global model through the persistor named by `persistor_id` and tests it on the `dataset`
    component's `test()` images; writes the metrics to `results_file` in the run folder."""

    component_args: ClassVar[tuple[ComponentArg, ...]] = (
        ComponentArg("persistor_id", "persistor", PTFileModelPersistor, "persistor"),
    )

    def __init__(
        self, *, persistor: PTFileModelPersistor, dataset: ComponentSpec = None, results_file: str = "global_test.json"
    ) -> None:
        if dataset is None:
            raise ValueError("dataset is required (e.g. {'path': 'digits_data.DigitsShards'})")
        self.persistor, self.dataset_spec, self.results_file = persistor, dataset, results_file

    def run(self, runtime: WorkflowRuntime) -> None:
        context = runtime.context
        dataset: Any = build_component(self.dataset_spec, context.app_dir / "custom", object, "dataset")
        test_x, test_y = dataset.test()
        module = self.persistor.to_module(self.persistor.load_model(context), context)
        metrics = evaluate(module, test_x, test_y)
        report = {**metrics, "model": str(self.persistor.global_model_path(context))}
        path = context.run_dir / self.results_file
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        log.info(
            "global model test: accuracy %.4f, loss %.4f on %d held-out images (%s)",
            metrics["accuracy"],
            metrics["loss"],
            metrics["samples"],
            path,
        )
