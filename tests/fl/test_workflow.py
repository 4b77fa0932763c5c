"""What a workflow runs with: events to hooks, the committed round to resume at."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fl_broker.fl.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.events import Event, EventType
from fl_broker.fl.workflow import WorkflowEntry, WorkflowRuntime, run_in_order
from tests.fl.fakes import INITIAL, FakeChannel, add_delta, make_runtime, make_workflow


@pytest.fixture
def runtime(tmp_path) -> WorkflowRuntime:
    context = RunContext("server", 4, tmp_path / "run_4", tmp_path / "run_4" / "app_server")
    return WorkflowRuntime(context=context, channel=None, abort_signal=Signal(), live_clients=list)  # type: ignore[arg-type]


def test_fire_reaches_every_hook_with_the_run_number(runtime):
    seen: list[Event] = []
    runtime.hooks += [seen.append, seen.append]
    runtime.fire("round_done", 2, accepted=1)
    assert seen == [Event("round_done", run=4, round=2, data={"accepted": 1})] * 2


def test_a_failing_hook_is_logged_and_the_others_still_run(runtime, caplog):
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("monitoring is down")

    runtime.hooks += [broken, seen.append]
    with caplog.at_level(logging.ERROR):
        runtime.fire("training_started")
    assert [e.type for e in seen] == ["training_started"]
    assert "failed on training_started" in caplog.text


def test_a_commit_survives_a_new_runtime(runtime):
    assert runtime.checkpoint() is None
    runtime.commit(3, {"w": np.zeros(2, np.float32)})
    runtime.commit(4, {"w": np.ones(2, np.float32)})
    again = WorkflowRuntime(
        context=runtime.context,
        channel=None,
        abort_signal=Signal(),
        live_clients=list,  # type: ignore[arg-type]
    )
    checkpoint = again.checkpoint()
    assert checkpoint is not None and checkpoint.next_round == 4
    np.testing.assert_array_equal(checkpoint.model["w"], np.ones(2, np.float32))


def two_workflows(first_rounds: int = 2, second_rounds: int = 3):
    """Two Scatter-and-Gather workflows sharing one persistor, as a config with two entries gives them."""
    first, persistor = make_workflow(min_clients=1, num_rounds=first_rounds)
    second, _ = make_workflow(persistor=persistor, min_clients=1, num_rounds=second_rounds)
    return [WorkflowEntry("first", first), WorkflowEntry("second", second)], persistor


def test_workflows_run_in_order_and_the_second_starts_from_the_shared_persistor(tmp_path):
    entries, persistor = two_workflows()
    runtime = make_runtime(tmp_path, FakeChannel({"site-1": add_delta()}))
    run_in_order(entries, runtime)
    # 2 rounds of the first, then the second loads the persistor's last model and adds 3 more
    assert [int(m["numpy_key"][0, 0]) for m in persistor.saved] == [2, 3, 4, 5, 6]
    started = [e for e in runtime.events if e.type == EventType.TRAINING_STARTED]
    assert [e.data["num_rounds"] for e in started] == [2, 3]
    checkpoint = read_checkpoint(runtime.context.run_dir)
    assert checkpoint is not None and (checkpoint.workflow, checkpoint.next_round) == ("second", 3)


def test_abort_stops_the_current_workflow_and_skips_the_rest(tmp_path):
    entries, persistor = two_workflows(first_rounds=50)
    runtime = make_runtime(tmp_path, FakeChannel({"site-1": add_delta()}))

    def abort_after_round_one(event):
        if event.type == EventType.ROUND_DONE and event.round == 1:
            runtime.abort_signal.trigger("aborted by admin")

    runtime.hooks.append(abort_after_round_one)
    run_in_order(entries, runtime)
    assert len(persistor.saved) == 2 and runtime.progress.phase == "aborted"
    assert [e.data["num_rounds"] for e in runtime.events if e.type == EventType.TRAINING_STARTED] == [50]


def test_a_restarted_run_resumes_inside_the_workflow_that_committed_last(tmp_path):
    entries, persistor = two_workflows()
    runtime = make_runtime(tmp_path, FakeChannel({"site-1": add_delta()}))
    write_checkpoint(
        runtime.context.run_dir,
        Checkpoint(next_round=1, model={"numpy_key": INITIAL["numpy_key"] + 10}, workflow="second"),
    )
    run_in_order(entries, runtime)
    started = [e for e in runtime.events if e.type == EventType.TRAINING_STARTED]
    assert [(e.data["num_rounds"], e.data["start_round"]) for e in started] == [(3, 1)]  # the first is done
    # the committed model saved again, then rounds 1 and 2 of the second
    assert [int(m["numpy_key"][0, 0]) for m in persistor.saved] == [11, 12, 13]
