"""Where a run is (phase, round, rounds done), derived from its lifecycle events by one tracker.

The workflow only fires events; the tracker is one of its hooks and the only writer of the progress, so a
status request on another thread always reads a consistent snapshot.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from enum import Enum

from fl_broker.fl.events import Event, EventType


class Phase(str, Enum):
    """What the server side of a run is doing, as check_status reports it."""

    IDLE = "idle"
    STARTING = "starting"
    WAITING = "waiting for clients"
    GATHERING = "gathering"
    AGGREGATING = "aggregating"
    FINISHED = "finished"
    ABORTED = "aborted"
    FAILED = "failed"


@dataclass(frozen=True)
class Progress:
    """A snapshot of where the running workflow is."""

    phase: Phase = Phase.IDLE
    current_round: int | None = None  # the round going on (or the one an abort stopped); None once finished
    num_rounds: int | None = None
    start_round: int = 0
    rounds_done: int = 0  # rounds completed in this run (a resumed run counts the ones before too)
    failure: str | None = None  # why the run failed (phase FAILED)


def advance(progress: Progress, event: Event) -> Progress:
    """The progress after `event`; events that say nothing about progress leave it as it is."""
    if event.type == EventType.TRAINING_STARTED:
        num_rounds, start = int(event.data["num_rounds"]), int(event.data["start_round"])
        return replace(
            progress,
            phase=Phase.WAITING,  # every round begins by waiting for enough clients
            num_rounds=num_rounds,
            start_round=start,
            rounds_done=start,
            current_round=start if start < num_rounds else None,
        )
    if event.type == EventType.ROUND_STARTED:
        return replace(progress, phase=Phase.GATHERING, current_round=event.round)
    if event.type == EventType.BEFORE_AGGREGATION:
        return replace(progress, phase=Phase.AGGREGATING)
    if event.type == EventType.ROUND_DONE and event.round is not None:
        following = event.round + 1
        more = progress.num_rounds is None or following < progress.num_rounds
        return replace(
            progress, phase=Phase.WAITING, rounds_done=following, current_round=following if more else event.round
        )
    if event.type == EventType.TRAINING_FINISHED:  # no round is current any more; rounds_done says how many ran
        return replace(progress, phase=Phase.FINISHED, current_round=None)
    if event.type == EventType.RUN_ABORTED:
        return replace(progress, phase=Phase.ABORTED)
    if event.type == EventType.RUN_FAILED:
        return replace(progress, phase=Phase.FAILED, failure=str(event.data.get("reason") or "failed"))
    return progress


class ProgressTracker:
    """An event hook that keeps the progress of one run; read `progress` from any thread."""

    def __init__(self, phase: Phase = Phase.IDLE) -> None:
        self._progress = Progress(phase=phase)
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._progress = advance(self._progress, event)

    @property
    def progress(self) -> Progress:
        """The current snapshot."""
        with self._lock:
            return self._progress
