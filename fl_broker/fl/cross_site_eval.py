"""FLARE's cross-site model evaluation: every site's local model and the global model, validated on every
site's data, as a matrix of metrics (data site x model) saved to `run_N/cross_site_val/cross_val_results.json`.

The server asks each site for its local model (`submit_model`), then sends each model in turn, the global
one first, to every site as a `validate` task; a site answers with a METRICS DXO of numbers. The JSON has
FLARE's layout, `{data_site: {model_name: {metric: value}}}`, the global model named `SRV_<name>`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import ClassVar

from fl_broker.fl.broadcast import broadcast_and_gather
from fl_broker.fl.checkpoint import read_checkpoint
from fl_broker.fl.events import EventType
from fl_broker.fl.metrics import Metrics, validation_metrics
from fl_broker.fl.persistor import ModelPersistor
from fl_broker.fl.workflow import PERSISTOR_ARG, ComponentArg, TaskResult, Workflow, WorkflowRuntime
from fl_broker.wire.messages import DXO, DataKind, ReturnCode, Shareable

log = logging.getLogger(__name__)

MODEL_OWNER = "model_owner"  # the header and cookie naming the model a validate task carries
FLARE_MODEL_OWNER = "_model_owner_"  # FLARE's name for them (AppConstants.MODEL_OWNER): set as well
RESULTS_FILE = "cross_val_results.json"


class CrossSiteModelEval(Workflow):
    """Cross-site evaluation with FLARE 2.0's arguments (`cross_val_dir`, `submit_model_timeout`,
    `validation_timeout`, `submit_model_task_name`, `validation_task_name`, `participating_clients`,
    `wait_for_clients_timeout`); the global model comes from the persistor named by `persistor_id`."""

    component_args: ClassVar[tuple[ComponentArg, ...]] = (PERSISTOR_ARG,)

    def __init__(
        self,
        *,
        persistor: ModelPersistor | None,
        cross_val_dir: str = "cross_site_val",
        submit_model_timeout: float = 600,
        validation_timeout: float = 6000,
        submit_model_task_name: str = "submit_model",
        validation_task_name: str = "validate",
        participating_clients: list[str] | None = None,
        wait_for_clients_timeout: float = 300,
        global_model_name: str = "global_model",
    ) -> None:
        if min(submit_model_timeout, validation_timeout, wait_for_clients_timeout) < 0:
            raise ValueError("submit_model_timeout, validation_timeout and wait_for_clients_timeout must be >= 0")
        self.persistor = persistor
        self.cross_val_dir = cross_val_dir
        self.submit_model_timeout = float(submit_model_timeout)
        self.validation_timeout = float(validation_timeout)
        self.submit_model_task_name = submit_model_task_name
        self.validation_task_name = validation_task_name
        self.participating_clients = list(participating_clients or [])
        self.wait_for_clients_timeout = float(wait_for_clients_timeout)
        self.global_model_name = global_model_name

    def run(self, runtime: WorkflowRuntime) -> None:
        sites = self._wait_for_sites(runtime)
        if not sites:
            return self._stopped(runtime, "no participating clients")
        runtime.fire(EventType.CROSS_VAL_STARTED, sites=sites)
        models = self._server_models(runtime)
        models.update(self._collect_local_models(runtime, sites))
        matrix: dict[str, dict[str, Metrics]] = {site: {} for site in sites}
        for name in list(models):
            if runtime.abort_signal.triggered:
                return self._stopped(runtime, runtime.abort_signal.reason)
            for site, metrics in self._validate(runtime, name, models.pop(name), sites).items():
                matrix[site][name] = metrics
        if runtime.abort_signal.triggered:  # during the last model's validation
            return self._stopped(runtime, runtime.abort_signal.reason)
        path = self._save(runtime, matrix)
        log.info("cross-site evaluation saved to %s", path)
        runtime.fire(EventType.CROSS_VAL_DONE, results=str(path))

    def _server_models(self, runtime: WorkflowRuntime) -> dict[str, DXO]:
        """The server's models to validate, by name: the global model, `SRV_<global_model_name>`, as the run's
        last committed round left it (the persistor's model if no round was committed)."""
        checkpoint = read_checkpoint(runtime.context.run_dir)
        if checkpoint is not None:
            weights = checkpoint.model
        elif self.persistor is not None:
            weights = self.persistor.load_model(runtime.context)
        else:
            return {}
        return {f"SRV_{self.global_model_name}": DXO(DataKind.WEIGHTS, weights)}

    def _stopped(self, runtime: WorkflowRuntime, reason: str) -> None:
        if runtime.abort_signal.triggered:
            runtime.fire(EventType.RUN_ABORTED, reason=reason)
        else:
            log.warning("cross-site evaluation did not run: %s", reason)

    def _wait_for_sites(self, runtime: WorkflowRuntime) -> list[str]:
        """The participating clients once they are live (all of them, or the live ones at the timeout)."""
        deadline = time.monotonic() + self.wait_for_clients_timeout
        while not runtime.abort_signal.triggered:
            live = runtime.live_clients()
            wanted = self.participating_clients or live
            ready = [site for site in wanted if site in live]
            if (ready and len(ready) == len(wanted)) or time.monotonic() >= deadline:
                return ready
            runtime.abort_signal.wait(0.05)
        return []

    @staticmethod
    def _task_id(runtime: WorkflowRuntime, what: str) -> str:
        return f"run{runtime.context.run_number}-{runtime.workflow_id or 'cross_site_eval'}-{what}"

    def _collect_local_models(self, runtime: WorkflowRuntime, sites: list[str]) -> dict[str, DXO]:
        """Each site's submitted local model (WEIGHTS); a site that sends none is left out, with why."""
        task = Shareable()
        task.task_name = self.submit_model_task_name
        task.task_id = self._task_id(runtime, self.submit_model_task_name)
        models: dict[str, DXO] = {}
        for result in self._broadcast(runtime, task, sites, self.submit_model_timeout):
            dxo = result.shareable.dxo
            problem = _not_ok(result) or (
                None if dxo is not None and dxo.data_kind == DataKind.WEIGHTS else "its model is not a WEIGHTS DXO"
            )
            if problem:
                log.warning("cross-site evaluation: refused the local model of %s: %s", result.site, problem)
                result.refuse(problem)
                continue
            assert dxo is not None
            result.accept()
            models[result.site] = dxo
        return models

    def _validate(self, runtime: WorkflowRuntime, name: str, model: DXO, sites: list[str]) -> dict[str, Metrics]:
        """The metrics of model `name` on each site that validated it (refusals logged, naming site and model)."""
        task = model.to_shareable()
        task.task_name = self.validation_task_name
        task.task_id = self._task_id(runtime, f"{self.validation_task_name}-{name}")
        for key in (MODEL_OWNER, FLARE_MODEL_OWNER):
            task.set_header(key, name)
            task.cookie_jar[key] = name
        found: dict[str, Metrics] = {}
        for result in self._broadcast(runtime, task, sites, self.validation_timeout):
            metrics = _not_ok(result) or validation_metrics(result.shareable.dxo)
            if isinstance(metrics, str):
                log.warning(
                    "cross-site evaluation: refused %s's validation of model %s: %s", result.site, name, metrics
                )
                result.refuse(metrics)
                continue
            result.accept()
            found[result.site] = metrics
            runtime.fire(
                EventType.VALIDATION_RESULT_RECEIVED, model_owner=name, data_client=result.site, metrics=metrics
            )
        return found

    def _broadcast(
        self, runtime: WorkflowRuntime, task: Shareable, sites: list[str], timeout: float
    ) -> list[TaskResult]:
        """Send `task` to `sites` and gather one answer per site, until all answered, `timeout` (0: none) or an
        abort. Results for other tasks (late, stray) are refused as they come."""
        return broadcast_and_gather(runtime, task, sites, timeout=timeout)

    def _save(self, runtime: WorkflowRuntime, matrix: dict[str, dict[str, Metrics]]) -> Path:
        folder = runtime.context.run_dir / self.cross_val_dir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / RESULTS_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(matrix, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
        return path


def _not_ok(result: TaskResult) -> str | None:
    code = result.shareable.return_code
    return None if code == ReturnCode.OK else f"return code {code.value}"
