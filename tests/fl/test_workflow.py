"""What a workflow runs with: events to hooks, the committed round to resume at."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.events import Event
from fl_broker.fl.workflow import WorkflowRuntime


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
