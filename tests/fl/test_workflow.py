"""What a workflow runs with: events to hooks, the saved round to resume at."""

from __future__ import annotations

import logging

import pytest

from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.events import Event
from fl_broker.fl.workflow import PROGRESS_FILE, WorkflowRuntime


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


def test_the_round_to_resume_at_survives_a_new_runtime(runtime, tmp_path):
    assert runtime.saved_next_round() is None
    runtime.save_next_round(3)
    runtime.save_next_round(4)
    again = WorkflowRuntime(
        context=runtime.context,
        channel=None,
        abort_signal=Signal(),
        live_clients=list,  # type: ignore[arg-type]
    )
    assert again.saved_next_round() == 4
    assert not list((runtime.context.run_dir / "models").glob("*.tmp"))


@pytest.mark.parametrize("text", ["{", '{"next": 1}', '{"next_round": "x"}', "[]"])
def test_an_unreadable_progress_file_means_start_from_the_beginning(runtime, caplog, text):
    path = runtime.context.run_dir / PROGRESS_FILE
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with caplog.at_level(logging.WARNING):
        assert runtime.saved_next_round() is None
    assert "ignoring unreadable progress file" in caplog.text
