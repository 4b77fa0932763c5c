"""Lifecycle events of a run, with FLARE's names, and the small hook type that receives them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class EventType:
    """Event names FLARE users know (AppEventType)."""

    INITIAL_MODEL_LOADED = "initial_model_loaded"
    TRAINING_STARTED = "training_started"
    ROUND_STARTED = "round_started"
    BEFORE_CONTRIBUTION_ACCEPT = "before_contribution_accept"
    AFTER_CONTRIBUTION_ACCEPT = "after_contribution_accept"
    BEFORE_AGGREGATION = "before_aggregation"
    AFTER_AGGREGATION = "after_aggregation"
    BEFORE_MODEL_UPDATE = "before_shareable_to_learnable"
    AFTER_MODEL_UPDATE = "after_shareable_to_learnable"
    BEFORE_SAVE = "before_learnable_persist"
    AFTER_SAVE = "after_learnable_persist"
    ROUND_DONE = "round_done"
    TRAINING_FINISHED = "training_finished"
    RUN_ABORTED = "run_aborted"
    CROSS_VAL_STARTED = "cross_val_started"
    VALIDATION_RESULT_RECEIVED = "validation_result_received"  # data: model_owner, data_client, metrics
    CROSS_VAL_DONE = "cross_val_done"  # data: results (the JSON file)
    RUN_FAILED = "run_failed"  # fl-broker's: the run ended without a result; data["reason"] says why


@dataclass(frozen=True)
class Event:
    """One lifecycle event: what happened, in which run and round, with small JSON-able details."""

    type: str
    run: int
    round: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


EventHook = Callable[[Event], None]


def fire(hooks: Iterable[EventHook], event: Event) -> None:
    """Call every hook; a failing hook is logged and never stops the run."""
    for hook in hooks:
        try:
            hook(event)
        except Exception:
            log.exception("event hook %r failed on %s", hook, event.type)
