"""`...workflows.initialize_global_weights`: FLARE's InitializeGlobalWeights as an fl-broker workflow: ask the sites
for their model weights (a `get_weights` task), take the first site's (`weight_method` "first") or one named
site's ("client"), and leave them in the context as GLOBAL_MODEL (sticky), where the next workflow's
ScatterAndGather finds them when its persistor has no weights."""

from __future__ import annotations

import logging

from fl_broker.errors import WorkflowFailed
from fl_broker.fl.broadcast import broadcast_and_gather
from fl_broker.fl.workflow import TaskResult, Workflow, WorkflowRuntime
from fl_broker.flare.apis.fl_component import FLComponent
from fl_broker.flare.app_common.abstract.model import make_model_learnable
from fl_broker.flare.app_common.app_constant import AppConstants
from fl_broker.flare.runtime import FlareEngine
from fl_broker.wire.messages import DataKind, Shareable

log = logging.getLogger(__name__)

WEIGHT_METHODS = ("first", "client")


class InitializeGlobalWeights(Workflow, FLComponent):
    """FLARE's arguments: task_name, min_responses_required (0: every site), wait_time_after_min_received,
    task_timeout (0: none), weights_prop_name, weight_method, weights_client_name, clients (None: the live
    sites)."""

    def __init__(
        self,
        *,
        task_name: str = AppConstants.TASK_GET_WEIGHTS,
        min_responses_required: int = 0,
        wait_time_after_min_received: float = 0,
        task_timeout: float = 0,
        weights_prop_name: str = AppConstants.GLOBAL_MODEL,
        weight_method: str = "first",
        weights_client_name: str | None = None,
        clients: list[str] | None = None,
    ) -> None:
        if weight_method not in WEIGHT_METHODS:
            raise ValueError(f"weight_method must be one of {', '.join(WEIGHT_METHODS)}, got {weight_method!r}")
        if weight_method == "client" and not weights_client_name:
            raise ValueError("weight_method 'client' needs weights_client_name")
        if min(min_responses_required, wait_time_after_min_received, task_timeout) < 0:
            raise ValueError("min_responses_required, wait_time_after_min_received and task_timeout must be >= 0")
        self.task_name = task_name
        self.min_responses_required = min_responses_required
        self.wait_time_after_min_received = float(wait_time_after_min_received)
        self.task_timeout = float(task_timeout)
        self.weights_prop_name = weights_prop_name
        self.weight_method = weight_method
        self.weights_client_name = weights_client_name
        self.clients = list(clients or [])
        self.engine = FlareEngine()

    def bind_engine(self, engine: FlareEngine) -> None:
        """The app's FLARE engine, whose context gets the weights."""
        self.engine = engine

    def run(self, runtime: WorkflowRuntime) -> None:
        sites = self._wait_for_sites(runtime)
        if not sites:
            return  # aborted while waiting
        task = Shareable(task_name=self.task_name, task_id=f"run{runtime.context.run_number}-{runtime.workflow_id}")
        results = broadcast_and_gather(
            runtime,
            task,
            sites,
            timeout=self.task_timeout,
            min_responses=self.min_responses_required,
            wait_after_min=self.wait_time_after_min_received,
        )
        if runtime.abort_signal.triggered:
            return
        weights = self._choose(results)
        if not weights:
            raise WorkflowFailed(f"{self.task_name}: no weights available from {', '.join(sites)}")
        ctx = self.engine.new_context(runtime.context)
        ctx.set_prop(self.weights_prop_name, make_model_learnable(weights, {}), private=True, sticky=True)
        log.info("initial global weights taken from the sites' %s answers (%s)", self.task_name, self.weight_method)

    def _wait_for_sites(self, runtime: WorkflowRuntime) -> list[str]:
        needed = len(self.clients) or max(1, self.min_responses_required)
        while not runtime.abort_signal.triggered:
            live = runtime.live_clients()
            ready = [site for site in self.clients if site in live] if self.clients else live
            if len(ready) >= needed:
                return ready
            runtime.abort_signal.wait(0.05)
        return []

    def _choose(self, results: list[TaskResult]) -> dict[str, object]:
        """The weights by the weight method; each answer accepted if it is WEIGHTS, refused (saying why) if not."""
        chosen: dict[str, object] = {}
        for result in results:
            dxo = result.shareable.dxo
            if result.shareable.return_code != "OK" or dxo is None or dxo.data_kind != DataKind.WEIGHTS or not dxo.data:
                result.refuse(f"{self.task_name}: the answer is not a WEIGHTS DXO with weights")
                log.warning("%s: %s sent no weights", self.task_name, result.site)
                continue
            result.accept()
            wanted = self.weight_method == "first" or result.site == self.weights_client_name
            if wanted and not chosen:
                chosen = dict(dxo.data)
        return chosen
