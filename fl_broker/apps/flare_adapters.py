"""FLARE-style components (they take an FLContext, and persistors speak ModelLearnable) as the fl-broker
components the workflows and the worker call. The loader wraps a component only where an fl-broker kind is
expected (an executor, a workflow's persistor or shareable generator) and it is FLARE's counterpart of that
kind; the engine keeps the component itself (get_component, handle_event)."""

from __future__ import annotations

from typing import Any

from fl_broker.errors import WorkflowFailed
from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.executor import Executor
from fl_broker.fl.model import ModelLearnable, ShareableGenerator
from fl_broker.fl.persistor import ModelPersistor
from fl_broker.flare.apis import executor as flare_executor
from fl_broker.flare.apis.event_type import EventType
from fl_broker.flare.apis.fl_constant import FLContextKey
from fl_broker.flare.app_common.abstract import learnable_persistor, shareable_generator
from fl_broker.flare.app_common.abstract.model import ModelLearnableKey, make_model_learnable
from fl_broker.flare.app_common.app_constant import AppConstants
from fl_broker.flare.runtime import FlareEngine
from fl_broker.wire.messages import Shareable


def weights_of(learnable: Any, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The weights and meta of a ModelLearnable a FLARE component returned; WorkflowFailed naming `where` if it
    is something else (fl-broker's workflows need the weights, FLARE's components return them inside a
    ModelLearnable): the run ends as failed with that one line."""
    if not isinstance(learnable, dict) or ModelLearnableKey.WEIGHTS not in learnable:
        got = type(learnable).__name__ if not isinstance(learnable, dict) else f"a dict with keys {sorted(learnable)}"
        raise WorkflowFailed(f"{where} returned {got}, expected a ModelLearnable (make_model_learnable(weights, meta))")
    weights, meta = learnable.get(ModelLearnableKey.WEIGHTS) or {}, learnable.get(ModelLearnableKey.META) or {}
    if not isinstance(weights, dict) or not isinstance(meta, dict):
        raise WorkflowFailed(f"{where} returned a ModelLearnable whose weights or meta is not a dict")
    return dict(weights), dict(meta)


class FlareExecutor(Executor):
    """A FLARE Executor as an fl-broker one: each task gets an FLContext with the task's name, id and data,
    and BEFORE/AFTER_TASK_EXECUTION are fired around it."""

    def __init__(self, executor: flare_executor.Executor, engine: FlareEngine) -> None:
        self.executor = executor
        self.engine = engine

    def execute(self, task_name: str, shareable: Shareable, context: RunContext, abort_signal: Signal) -> Shareable:
        ctx = self.engine.new_context(context)
        for key, value in (
            (FLContextKey.TASK_NAME, task_name),
            (FLContextKey.TASK_ID, shareable.task_id),
            (FLContextKey.TASK_DATA, shareable),
            (FLContextKey.RUN_ABORT_SIGNAL, abort_signal),  # a site's system_panic ends its part of the run
        ):
            ctx.set_prop(key, value, private=True, sticky=False)
        self.engine.fire_event(EventType.BEFORE_TASK_EXECUTION, ctx)
        result = self.executor.execute(task_name, shareable, ctx, abort_signal)
        ctx.set_prop(FLContextKey.TASK_RESULT, result, private=True, sticky=False)
        self.engine.fire_event(EventType.AFTER_TASK_EXECUTION, ctx)
        return result


class FlarePersistor(ModelPersistor):
    """A FLARE (Model|Learnable)Persistor as an fl-broker one. load_model gets AppConstants.START_ROUND (the
    round decided before it is called), and the model loaded or saved becomes the context's GLOBAL_MODEL;
    the meta the persistor gave comes back with every save."""

    def __init__(self, persistor: learnable_persistor.LearnablePersistor, engine: FlareEngine) -> None:
        self.persistor = persistor
        self.engine = engine
        self._meta: dict[str, Any] = {}

    def load_model(self, context: RunContext) -> ModelLearnable:
        ctx = self.engine.new_context(context)
        ctx.set_prop(AppConstants.START_ROUND, context.start_round, private=True, sticky=True)
        weights, self._meta = weights_of(self.persistor.load(ctx), f"{type(self.persistor).__name__}.load_model")
        if weights:
            ctx.set_prop(
                AppConstants.GLOBAL_MODEL, make_model_learnable(weights, self._meta), private=True, sticky=True
            )
        return weights

    def save_model(self, model: ModelLearnable, context: RunContext) -> None:
        ctx = self.engine.new_context(context)
        learnable = make_model_learnable(dict(model), dict(self._meta))
        ctx.set_prop(AppConstants.GLOBAL_MODEL, learnable, private=True, sticky=True)
        self.persistor.save(learnable, ctx)


class FlareShareableGenerator(ShareableGenerator):
    """A FLARE ShareableGenerator as an fl-broker one; the global model is the context's GLOBAL_MODEL, and the
    aggregated result is its AGGREGATION_RESULT, as FLARE's Scatter-and-Gather sets them."""

    def __init__(self, generator: shareable_generator.ShareableGenerator, engine: FlareEngine) -> None:
        self.generator = generator
        self.engine = engine

    def learnable_to_shareable(self, model: ModelLearnable) -> Shareable:
        ctx = self.engine.new_context()
        learnable = make_model_learnable(dict(model), {})
        ctx.set_prop(AppConstants.GLOBAL_MODEL, learnable, private=True, sticky=True)
        return self.generator.learnable_to_shareable(learnable, ctx)

    def shareable_to_learnable(self, shareable: Shareable, model: ModelLearnable) -> ModelLearnable:
        ctx = self.engine.new_context()
        ctx.set_prop(AppConstants.GLOBAL_MODEL, make_model_learnable(dict(model), {}), private=True, sticky=True)
        ctx.set_prop(AppConstants.AGGREGATION_RESULT, shareable, private=True, sticky=False)
        updated = self.generator.shareable_to_learnable(shareable, ctx)
        weights, _ = weights_of(updated, f"{type(self.generator).__name__}.shareable_to_learnable")
        return weights


# fl-broker's kinds and the FLARE base (and adapter) that stands in for each.
_ADAPTERS: tuple[tuple[type, type, type], ...] = (
    (Executor, flare_executor.Executor, FlareExecutor),
    (ModelPersistor, learnable_persistor.LearnablePersistor, FlarePersistor),
    (ShareableGenerator, shareable_generator.ShareableGenerator, FlareShareableGenerator),
)


class Adapters:
    """The adapters of one loaded app: one per wrapped component, so two workflows naming the same
    persistor share its adapter (and the meta it keeps)."""

    def __init__(self, engine: FlareEngine) -> None:
        self.engine = engine
        self._made: dict[int, Any] = {}

    def as_kind(self, kind: type, component: Any) -> Any:
        """`component` as a `kind` (itself, or its adapter); None if it is neither."""
        if isinstance(component, kind):
            return component
        for wanted, flare_base, adapter in _ADAPTERS:
            if issubclass(kind, wanted) and isinstance(component, flare_base):
                if id(component) not in self._made:
                    self._made[id(component)] = adapter(component, self.engine)
                return self._made[id(component)]
        return None
