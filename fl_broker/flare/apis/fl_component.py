"""`nvflare.apis.fl_component`: FLComponent, the base of every FLARE component: a logger named after the class,
logging helpers that prefix the run and task, events (fired to every component of the participant through
the engine), and the panics, which end the run (system) or fail the task (task)."""

from __future__ import annotations

import logging
from typing import Any

from fl_broker.flare.apis.event_type import EventType
from fl_broker.flare.apis.fl_constant import EventScope, FLContextKey
from fl_broker.flare.apis.fl_context import FLContext


class FLComponent:
    """What FLARE's components share. Subclasses that skip `super().__init__()` still get `logger`."""

    def __init__(self) -> None:
        self._name = type(self).__name__
        self.logger = logging.getLogger(self._name)

    @property
    def logger(self) -> logging.Logger:
        """The component's logger (named after its class unless set)."""
        found: logging.Logger | None = self.__dict__.get("_logger")
        return found if found is not None else logging.getLogger(type(self).__name__)

    @logger.setter
    def logger(self, value: logging.Logger) -> None:
        self.__dict__["_logger"] = value

    @property
    def _name(self) -> str:
        return str(self.__dict__.get("_component_name", type(self).__name__))

    @_name.setter
    def _name(self, value: str) -> None:
        self.__dict__["_component_name"] = value

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        """Called for every event fired on this participant; override to react (the default ignores them)."""

    def fire_event(self, event_type: str, fl_ctx: FLContext) -> None:
        """Deliver `event_type` to every component of this participant (this one too)."""
        if not isinstance(event_type, str) or not event_type:
            raise ValueError(f"event_type must be a non-empty str, got {event_type!r}")
        fl_ctx.set_prop(FLContextKey.EVENT_SCOPE, EventScope.LOCAL, private=True, sticky=False)
        self._fire(event_type, fl_ctx)

    def fire_fed_event(self, event_type: str, event_data: Any, fl_ctx: FLContext, targets: Any = None) -> None:
        """FLARE sends these to other sites; fl-broker has no such channel, so the event is fired locally
        only (with a warning saying so)."""
        self.logger.warning("%s: fire_fed_event(%r) is fired on this participant only", self._name, event_type)
        fl_ctx.set_prop(FLContextKey.EVENT_DATA, event_data, private=True, sticky=False)
        self.fire_event(event_type, fl_ctx)

    def _fire(self, event_type: str, fl_ctx: FLContext) -> None:
        fl_ctx.set_prop(FLContextKey.EVENT_ORIGIN, self._name, private=True, sticky=False)
        engine = fl_ctx.get_engine()
        if engine is None:
            self.logger.error("%s: cannot fire %s: the context has no engine", self._name, event_type)
            return
        engine.fire_event(event_type, fl_ctx)

    def system_panic(self, reason: str, fl_ctx: FLContext) -> None:
        """Something is wrong beyond this task: the run on this participant is aborted, with `reason`."""
        fl_ctx.set_prop(FLContextKey.EVENT_DATA, reason, private=True, sticky=False)
        self.fire_event(EventType.FATAL_SYSTEM_ERROR, fl_ctx)

    def task_panic(self, reason: str, fl_ctx: FLContext) -> None:
        """The current task cannot go on (logged; the executor's reply says how it ended)."""
        fl_ctx.set_prop(FLContextKey.EVENT_DATA, reason, private=True, sticky=False)
        self.fire_event(EventType.FATAL_TASK_ERROR, fl_ctx)

    def log_debug(self, fl_ctx: FLContext, msg: str, fire_event: bool = False) -> None:
        """Log at DEBUG, prefixed with the run and task."""
        self._log(logging.DEBUG, EventType.DEBUG_LOG_AVAILABLE, fl_ctx, msg, fire_event)

    def log_info(self, fl_ctx: FLContext, msg: str, fire_event: bool = False) -> None:
        """Log at INFO, prefixed with the run and task."""
        self._log(logging.INFO, EventType.INFO_LOG_AVAILABLE, fl_ctx, msg, fire_event)

    def log_warning(self, fl_ctx: FLContext, msg: str, fire_event: bool = True) -> None:
        """Log at WARNING; by default also fire WARNING_LOG_AVAILABLE (as FLARE does)."""
        self._log(logging.WARNING, EventType.WARNING_LOG_AVAILABLE, fl_ctx, msg, fire_event)

    def log_error(self, fl_ctx: FLContext, msg: str, fire_event: bool = True) -> None:
        """Log at ERROR; by default also fire ERROR_LOG_AVAILABLE."""
        self._log(logging.ERROR, EventType.ERROR_LOG_AVAILABLE, fl_ctx, msg, fire_event)

    def log_critical(self, fl_ctx: FLContext, msg: str, fire_event: bool = True) -> None:
        """Log at CRITICAL; by default also fire CRITICAL_LOG_AVAILABLE."""
        self._log(logging.CRITICAL, EventType.CRITICAL_LOG_AVAILABLE, fl_ctx, msg, fire_event)

    def log_exception(self, fl_ctx: FLContext, msg: str, fire_event: bool = False) -> None:
        """Log at ERROR with the exception being handled (its traceback)."""
        self.logger.error("%s", describe(fl_ctx, msg), exc_info=True)
        if fire_event:
            self._log_event(EventType.EXCEPTION_LOG_AVAILABLE, fl_ctx, msg)

    def _log(self, level: int, event_type: str, fl_ctx: FLContext, msg: str, fire_event: bool) -> None:
        self.logger.log(level, "%s", describe(fl_ctx, msg))
        if fire_event:
            self._log_event(event_type, fl_ctx, msg)

    def _log_event(self, event_type: str, fl_ctx: FLContext, msg: str) -> None:
        fl_ctx.set_prop(FLContextKey.EVENT_DATA, describe(fl_ctx, msg), private=True, sticky=False)
        self.fire_event(event_type, fl_ctx)


def describe(fl_ctx: FLContext | None, msg: str) -> str:
    """`msg` prefixed with what the context says of the run and the task, e.g. "[run=1, task=train]: msg"."""
    if not isinstance(fl_ctx, FLContext):
        return msg
    parts = [f"run={fl_ctx.get_run_number() or '?'}"]
    for label, key in (("wf", FLContextKey.WORKFLOW), ("task", FLContextKey.TASK_NAME), ("id", FLContextKey.TASK_ID)):
        value = fl_ctx.get_prop(key)
        if value:
            parts.append(f"{label}={value}")
    return f"[{', '.join(parts)}]: {msg}"
