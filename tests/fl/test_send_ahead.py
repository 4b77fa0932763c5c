"""ScatterAndGather sends the next round's task as soon as a round's aggregate is checked, before that round is
committed: what goes out when, that no result of the next round is taken before the commit, when nothing is
sent early, and a server killed between the early task and the commit resuming to the exact weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from fl_broker.fl.events import EventType
from fl_broker.fl.model import ModelLearnable
from fl_broker.wire.messages import Shareable
from tests.fl.fakes import INITIAL, FakeChannel, RecordingRuntime, add_delta, make_runtime, make_workflow

SITES = {"site-1": add_delta(), "site-2": add_delta()}


@dataclass
class LoggingChannel(FakeChannel):
    """A FakeChannel that writes each send and settlement into a log shared with the runtime."""

    log: list[str] = field(default_factory=list)

    def send(self, task: Shareable, targets: Sequence[str], *, round: int) -> None:
        self.log.append(f"send {round}")
        super().send(task, targets, round=round)

    def receive(self, timeout: float) -> Any:
        result = super().receive(timeout)
        if result is not None:
            self.log.append(f"take {result.site} {result.round}")
        return result


class Killed(Exception):
    """Stands in for a kill: raised where the commit would be."""


def logging_runtime(tmp_path, channel: LoggingChannel, kill_at_commit: int | None = None) -> RecordingRuntime:
    runtime = make_runtime(tmp_path, channel)
    commit = runtime.commit

    def logged_commit(next_round: int, model: ModelLearnable, state: dict[str, Any] | None = None) -> None:
        if next_round == kill_at_commit:
            raise Killed
        commit(next_round, model, state)
        channel.log.append(f"commit {next_round}")

    runtime.commit = logged_commit  # type: ignore[method-assign]
    runtime.hooks.append(lambda e: channel.log.append(f"{e.type} {e.round}") if e.type.startswith("round") else None)
    return runtime


def test_the_next_task_goes_out_before_the_commit_and_its_results_are_taken_after(tmp_path):
    workflow, persistor = make_workflow(min_clients=2, num_rounds=3)
    channel = LoggingChannel(dict(SITES))
    workflow.run(logging_runtime(tmp_path, channel))
    log = [line for line in channel.log if not line.startswith("take")]
    assert log == [
        "round_started 0",
        "send 0",
        "send 1",  # round 0's aggregate is checked: round 1's task goes out, then round 0 is committed
        "commit 1",
        "round_done 0",
        "round_started 1",
        "send 2",
        "commit 2",
        "round_done 1",
        "round_started 2",
        "commit 3",  # the last round sends nothing ahead
        "round_done 2",
    ]
    for rnd in (1, 2):  # every result of a round is taken after the previous round's commit and round_started
        first_take = min(
            i for i, line in enumerate(channel.log) if line.startswith("take") and line.endswith(f" {rnd}")
        )
        assert channel.log.index(f"commit {rnd}") < channel.log.index(f"round_started {rnd}") < first_take
    for rnd, model in enumerate(persistor.saved):
        np.testing.assert_array_equal(model["numpy_key"], INITIAL["numpy_key"] + rnd + 1)
    assert channel.refused() == []


def test_nothing_goes_out_early_when_too_few_sites_are_there_or_the_run_is_aborted(tmp_path):
    workflow, persistor = make_workflow(min_clients=2, num_rounds=3)
    channel = LoggingChannel(dict(SITES))
    runtime = logging_runtime(tmp_path, channel)
    calls = []

    def live() -> list[str]:  # the second look (round 1's early send) finds one site only
        calls.append(1)
        return ["site-1"] if len(calls) == 2 else ["site-1", "site-2"]

    runtime.live_clients = live
    workflow.run(runtime)
    log = [line for line in channel.log if not line.startswith("take")]
    assert log.index("commit 1") < log.index("round_started 1") < log.index("send 1")  # round 1 waited, as before
    assert log.count("send 1") == 1 and log.index("send 2") < log.index("commit 2")  # round 2 went out early
    assert len(persistor.saved) == 3

    workflow, _ = make_workflow(min_clients=2, num_rounds=3)
    channel = LoggingChannel(dict(SITES))
    runtime = logging_runtime(tmp_path / "aborted", channel)
    runtime.hooks.append(
        lambda e: runtime.abort_signal.trigger("stop") if e.type == EventType.AFTER_MODEL_UPDATE else None
    )
    workflow.run(runtime)
    assert [line for line in channel.log if line.startswith("send")] == ["send 0"]  # no task for a round to come
    assert runtime.events[-1].type == EventType.RUN_ABORTED


@pytest.mark.parametrize("killed_round", [0, 1, 3])
def test_a_server_killed_between_the_early_task_and_the_commit_resumes_exactly(tmp_path, killed_round):
    channel = LoggingChannel(dict(SITES))
    workflow, _ = make_workflow(min_clients=2, num_rounds=5)
    with pytest.raises(Killed):  # killed before round `killed_round`'s commit, its next task already out
        workflow.run(logging_runtime(tmp_path, channel, kill_at_commit=killed_round + 1))
    assert f"send {killed_round + 1}" in channel.log
    # The early task's results wait in the queue (as they would in fl.result.server) for the restarted server.
    stale = channel.inbox.qsize()
    assert stale == 2
    workflow, persistor = make_workflow(min_clients=2, num_rounds=5)
    channel.log.clear()
    before = len(channel.settled)
    workflow.run(logging_runtime(tmp_path, channel))
    assert channel.log[1] == f"send {killed_round}"  # round `killed_round` is run again
    resumed = channel.settled[before:]
    refused = [s for s in resumed if s.reason is not None]
    assert len(refused) == stale and all(s.round == killed_round + 1 and "late or stray" in s.reason for s in refused)
    accepted = [s.round for s in resumed if s.reason is None]
    assert sorted(accepted) == sorted(list(range(killed_round, 5)) * 2)  # every site once in every round
    np.testing.assert_array_equal(persistor.saved[-1]["numpy_key"], INITIAL["numpy_key"] + 5)
