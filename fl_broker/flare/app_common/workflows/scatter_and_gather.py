"""`...workflows.scatter_and_gather`: FLARE's ScatterAndGather on fl-broker's, with FLARE 2.0's semantics where they
differ: rounds `start_round` .. `start_round + num_rounds - 1`; START_ROUND, NUM_ROUNDS and GLOBAL_MODEL in the
context; and when the persistor has no weights, the GLOBAL_MODEL an earlier workflow left in the context
(InitializeGlobalWeights)."""

from __future__ import annotations

from fl_broker.fl import scatter_gather
from fl_broker.fl.model import ModelLearnable
from fl_broker.fl.workflow import WorkflowRuntime
from fl_broker.flare.apis.fl_component import FLComponent
from fl_broker.flare.app_common.abstract.model import ModelLearnableKey, make_model_learnable
from fl_broker.flare.app_common.app_constant import AppConstants
from fl_broker.flare.runtime import FlareEngine


class ScatterAndGather(scatter_gather.ScatterAndGather, FLComponent):
    """Scatter-and-Gather with FLARE's arguments (min_clients, num_rounds, start_round,
    wait_time_after_min_received, aggregator_id, persistor_id, shareable_generator_id, train_task_name,
    train_timeout, ignore_result_error)."""

    counts_rounds_from_start = True  # rounds start_round .. start_round + num_rounds - 1
    sends_next_task_early = False  # FLARE's order: a round's ROUND_STARTED, then its task
    engine: FlareEngine | None = None

    def bind_engine(self, engine: FlareEngine) -> None:
        """The app's FLARE engine, whose context this workflow reads and sets."""
        self.engine = engine

    def _initial_model(self, runtime: WorkflowRuntime) -> ModelLearnable:
        if self.engine is None:
            return super()._initial_model(runtime)
        ctx = self.engine.new_context(runtime.context)
        ctx.set_prop(AppConstants.START_ROUND, runtime.context.start_round, private=True, sticky=True)
        ctx.set_prop(AppConstants.NUM_ROUNDS, self.num_rounds, private=True, sticky=False)
        weights = super()._initial_model(runtime)
        if not weights:
            earlier = ctx.get_prop(AppConstants.GLOBAL_MODEL)
            weights = dict(earlier.get(ModelLearnableKey.WEIGHTS) or {}) if isinstance(earlier, dict) else {}
        if weights and ctx.get_prop(AppConstants.GLOBAL_MODEL) is None:
            ctx.set_prop(AppConstants.GLOBAL_MODEL, make_model_learnable(weights, {}), private=True, sticky=True)
        return weights
