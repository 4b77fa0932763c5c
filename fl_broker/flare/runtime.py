"""The FLARE engine of one participant's run, as fl-broker provides it (not a FLARE module): the components by
id, the run's sticky properties, FLContexts made from fl-broker's RunContext, and events delivered to every
component's handle_event. fl-broker's own lifecycle events (fl_broker.fl.events) reach FLARE components under
FLARE's names through `FlareEngine.on_event`, with the properties FLARE's workflows set for them."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.events import Event
from fl_broker.fl.events import EventType as Lifecycle
from fl_broker.flare.apis.event_type import EventType
from fl_broker.flare.apis.fl_constant import FLContextKey, ReservedKey
from fl_broker.flare.apis.fl_context import FLContext, PropStore
from fl_broker.flare.apis.workspace import Workspace
from fl_broker.flare.app_common.app_constant import AppConstants
from fl_broker.flare.app_common.app_event_type import AppEventType
from fl_broker.wire.messages import DXO, DataKind

log = logging.getLogger(__name__)

# fl-broker's lifecycle events and the FLARE event each one is delivered as.
FLARE_EVENTS: dict[str, str] = {
    Lifecycle.INITIAL_MODEL_LOADED: AppEventType.INITIAL_MODEL_LOADED,
    Lifecycle.TRAINING_STARTED: AppEventType.TRAINING_STARTED,
    Lifecycle.ROUND_STARTED: AppEventType.ROUND_STARTED,
    Lifecycle.BEFORE_CONTRIBUTION_ACCEPT: AppEventType.BEFORE_CONTRIBUTION_ACCEPT,
    Lifecycle.AFTER_CONTRIBUTION_ACCEPT: AppEventType.AFTER_CONTRIBUTION_ACCEPT,
    Lifecycle.BEFORE_AGGREGATION: AppEventType.BEFORE_AGGREGATION,
    Lifecycle.AFTER_AGGREGATION: AppEventType.AFTER_AGGREGATION,
    Lifecycle.BEFORE_MODEL_UPDATE: AppEventType.BEFORE_SHAREABLE_TO_LEARNABLE,
    Lifecycle.AFTER_MODEL_UPDATE: AppEventType.AFTER_SHAREABLE_TO_LEARNABLE,
    Lifecycle.BEFORE_SAVE: AppEventType.BEFORE_LEARNABLE_PERSIST,
    Lifecycle.AFTER_SAVE: AppEventType.AFTER_LEARNABLE_PERSIST,
    Lifecycle.ROUND_DONE: AppEventType.ROUND_DONE,
    Lifecycle.TRAINING_FINISHED: AppEventType.TRAINING_FINISHED,
    Lifecycle.CROSS_VAL_STARTED: AppEventType.CROSS_VAL_INIT,
    Lifecycle.VALIDATION_RESULT_RECEIVED: AppEventType.VALIDATION_RESULT_RECEIVED,
}


class FlareEngine:
    """What `fl_ctx.get_engine()` returns, for one loaded app (one run) on one participant."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}  # config id -> the component as built (not an adapter)
        self.listeners: list[Any] = []  # every object given handle_event calls, in config order
        self.sticky = PropStore()
        self.run_context: RunContext | None = None
        self.abort_signal: Signal | None = None

    def add(self, obj: Any, component_id: str | None = None) -> None:
        """Register a built object: by id if it is a component, and as a listener if it handles events."""
        if component_id is not None:
            self.components[component_id] = obj
        if callable(getattr(obj, "handle_event", None)) and not any(obj is seen for seen in self.listeners):
            self.listeners.append(obj)

    def bind(self, context: RunContext, abort_signal: Signal | None = None) -> None:
        """The run this engine serves (its folders, number, participant) and the run's abort signal."""
        self.run_context = replace(context, start_round=0)
        if abort_signal is not None:
            self.abort_signal = abort_signal

    # ---- what FLARE components call ----------------------------------------------------------------

    def get_workspace(self) -> Workspace:
        """The participant's workspace (run dirs, app dirs)."""
        context = self._context()
        return Workspace(str(context.run_dir.parent), context.site_name)

    def get_component(self, component_id: str) -> Any:
        """The component with this config id, or None."""
        return self.components.get(component_id)

    def get_all_components(self) -> dict[str, Any]:
        """Every component, by id."""
        return dict(self.components)

    def new_context(self, context: RunContext | None = None) -> FLContext:
        """A context with the run's reserved properties and its sticky ones."""
        if context is not None and self.run_context is None:
            self.bind(context)
        run = self._context()
        ctx = FLContext(self.sticky)
        ctx.set_prop(ReservedKey.ENGINE, self, private=True, sticky=False)
        ctx.set_prop(ReservedKey.RUN_NUM, run.run_number, private=False, sticky=False)
        ctx.set_prop(ReservedKey.IDENTITY_NAME, run.site_name, private=False, sticky=False)
        ctx.set_prop(ReservedKey.APP_ROOT, str(run.app_dir), private=True, sticky=False)
        ctx.set_prop(ReservedKey.WORKSPACE_ROOT, str(run.run_dir.parent), private=True, sticky=False)
        ctx.set_prop(ReservedKey.WORKSPACE_OBJECT, self.get_workspace(), private=True, sticky=False)
        if run.site_name != "server":
            ctx.set_prop(ReservedKey.CLIENT_NAME, run.site_name, private=False, sticky=False)
        if self.abort_signal is not None:
            ctx.set_prop(ReservedKey.RUN_ABORT_SIGNAL, self.abort_signal, private=True, sticky=False)
        return ctx

    def fire_event(self, event_type: str, fl_ctx: FLContext) -> None:
        """Deliver `event_type` to every listener; one that raises is logged and the others still get it."""
        for listener in list(self.listeners):
            try:
                listener.handle_event(event_type, fl_ctx)
            except Exception:
                log.exception("%s.handle_event(%s) failed", type(listener).__name__, event_type)
        if event_type == EventType.FATAL_SYSTEM_ERROR:
            self._panic(fl_ctx)

    def _panic(self, fl_ctx: FLContext) -> None:
        """A component called system_panic: the run on this participant is aborted, saying why."""
        origin = fl_ctx.get_prop(FLContextKey.EVENT_ORIGIN, "a component")
        reason = f"system_panic by {origin}: {fl_ctx.get_prop(FLContextKey.EVENT_DATA, '')}"
        log.error("%s; the run is aborted", reason)
        signal = fl_ctx.get_run_abort_signal()
        if isinstance(signal, Signal):
            signal.trigger(reason)

    # ---- the run's lifecycle -----------------------------------------------------------------------

    def start_run(self, context: RunContext, abort_signal: Signal | None = None) -> None:
        """Bind the run and fire ABOUT_TO_START_RUN, then START_RUN."""
        self.bind(context, abort_signal)
        self.fire_all((EventType.ABOUT_TO_START_RUN, EventType.START_RUN))

    def end_run(self) -> None:
        """Fire ABOUT_TO_END_RUN, then END_RUN (nothing if the run never started)."""
        if self.run_context is not None:
            self.fire_all((EventType.ABOUT_TO_END_RUN, EventType.END_RUN))

    def fire_all(self, event_types: Iterable[str]) -> None:
        """Fire each event in turn, each with a new context."""
        for event_type in event_types:
            self.fire_event(event_type, self.new_context())

    def on_event(self, event: Event) -> None:
        """An fl-broker lifecycle event hook: deliver it under FLARE's name, with FLARE's properties."""
        flare_type = FLARE_EVENTS.get(event.type)
        # No listener (an app of fl-broker's own components): no context to build for each of a round's 12-24
        # events, on the workflow thread.
        if flare_type is None or self.run_context is None or not self.listeners:
            return
        ctx = self.new_context()
        if event.round is not None:
            ctx.set_prop(AppConstants.CURRENT_ROUND, event.round, private=True, sticky=False)
        for key, prop in (("num_rounds", AppConstants.NUM_ROUNDS), ("accepted", AppConstants.AGGREGATION_ACCEPTED)):
            if key in event.data:
                ctx.set_prop(prop, event.data[key], private=True, sticky=False)
        if event.type == Lifecycle.TRAINING_STARTED:
            ctx.set_prop(AppConstants.PHASE, AppConstants.PHASE_TRAIN, private=True, sticky=False)
        if event.type == Lifecycle.VALIDATION_RESULT_RECEIVED:
            _validation_props(ctx, event.data)
        self.fire_event(flare_type, ctx)

    def _context(self) -> RunContext:
        if self.run_context is None:
            raise RuntimeError("the FLARE engine is used before its run is known (no start_run)")
        return self.run_context


def _validation_props(ctx: FLContext, data: dict[str, Any]) -> None:
    """The properties FLARE's cross-site evaluation sets with VALIDATION_RESULT_RECEIVED."""
    ctx.set_prop(AppConstants.MODEL_OWNER, data.get("model_owner"), private=True, sticky=False)
    ctx.set_prop(AppConstants.DATA_CLIENT, data.get("data_client"), private=True, sticky=False)
    metrics = DXO(DataKind.METRICS, dict(data.get("metrics") or {})).to_shareable()
    ctx.set_prop(AppConstants.VALIDATION_RESULT, metrics, private=True, sticky=False)
