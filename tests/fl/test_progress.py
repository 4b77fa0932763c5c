"""Progress is derived from lifecycle events, by one tracker that other threads can read."""

from __future__ import annotations

from fl_broker.fl.events import Event, EventType
from fl_broker.fl.progress import Phase, Progress, ProgressTracker, advance


def replay(events: list[tuple[str, int | None, dict]], start: Progress | None = None) -> list[Progress]:
    progress = start or Progress(phase=Phase.STARTING)
    seen = []
    for type_, round_, data in events:
        progress = advance(progress, Event(type_, run=1, round=round_, data=data))
        seen.append(progress)
    return seen


def test_a_run_of_two_rounds():
    seen = replay(
        [
            (EventType.INITIAL_MODEL_LOADED, None, {}),
            (EventType.TRAINING_STARTED, None, {"num_rounds": 2, "start_round": 0}),
            (EventType.ROUND_STARTED, 0, {}),
            (EventType.BEFORE_AGGREGATION, 0, {}),
            (EventType.ROUND_DONE, 0, {}),
            (EventType.ROUND_STARTED, 1, {}),
            (EventType.BEFORE_AGGREGATION, 1, {}),
            (EventType.ROUND_DONE, 1, {}),
            (EventType.TRAINING_FINISHED, 1, {}),
        ]
    )
    rows = [(p.phase.value, p.current_round, p.rounds_done) for p in seen]
    assert rows == [
        ("starting", None, 0),
        ("waiting for clients", 0, 0),
        ("gathering", 0, 0),
        ("aggregating", 0, 0),
        ("waiting for clients", 1, 1),
        ("gathering", 1, 1),
        ("aggregating", 1, 1),
        ("waiting for clients", 1, 2),
        ("finished", None, 2),  # finished: no round is current, two are done
    ]
    assert seen[-1].num_rounds == 2 and seen[-1].start_round == 0


def test_a_resumed_run_counts_the_rounds_before():
    [started] = replay([(EventType.TRAINING_STARTED, None, {"num_rounds": 10, "start_round": 7})])
    assert (started.start_round, started.rounds_done, started.current_round) == (7, 7, 7)
    [finished] = replay([(EventType.TRAINING_STARTED, None, {"num_rounds": 10, "start_round": 10})])
    assert finished.current_round is None and finished.rounds_done == 10


def test_an_abort_mid_round_does_not_count_the_round():
    seen = replay(
        [
            (EventType.TRAINING_STARTED, None, {"num_rounds": 5, "start_round": 0}),
            (EventType.ROUND_STARTED, 0, {}),
            (EventType.RUN_ABORTED, 0, {"reason": "aborted by admin"}),
        ]
    )
    assert (seen[-1].phase, seen[-1].rounds_done, seen[-1].current_round) == (Phase.ABORTED, 0, 0)


def test_other_events_change_nothing():
    before = Progress(phase=Phase.GATHERING, current_round=3, num_rounds=5, rounds_done=3)
    for type_ in (EventType.BEFORE_CONTRIBUTION_ACCEPT, EventType.AFTER_SAVE, "custom_event"):
        assert advance(before, Event(type_, run=1, round=3)) == before


def test_the_tracker_is_a_hook_and_marks_a_failure():
    tracker = ProgressTracker(Phase.STARTING)
    assert tracker.progress.phase == Phase.STARTING
    tracker(Event(EventType.TRAINING_STARTED, run=1, data={"num_rounds": 3, "start_round": 0}))
    tracker(Event(EventType.ROUND_STARTED, run=1, round=0))
    tracker(Event(EventType.ROUND_DONE, run=1, round=0))
    assert (tracker.progress.phase, tracker.progress.rounds_done) == (Phase.WAITING, 1)
    tracker(Event(EventType.RUN_FAILED, run=1, data={"reason": "round 0: 0 of 2 results accepted"}))
    progress = tracker.progress
    assert (progress.phase, progress.rounds_done) == (Phase.FAILED, 1)
    assert progress.failure == "round 0: 0 of 2 results accepted"
