"""Scatter-and-Gather semantics: rounds, early end, timeouts, refusals, events, resume."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from fl_broker.errors import WorkflowFailed
from fl_broker.fl.aggregation import InTimeAccumulateWeightedAggregator
from fl_broker.fl.events import EventType
from fl_broker.fl.model import FullModelShareableGenerator
from fl_broker.fl.scatter_gather import ScatterAndGather
from fl_broker.wire.messages import DXO, DataKind, ReturnCode, Shareable, make_reply
from tests.fl.fakes import INITIAL, FakeChannel, MemoryPersistor, add_delta, make_runtime, make_workflow


def test_ten_rounds_give_initial_plus_round_number(tmp_path):
    workflow, persistor = make_workflow(min_clients=2, num_rounds=10)
    channel = FakeChannel({"site-1": add_delta(), "site-2": add_delta()})
    runtime = make_runtime(tmp_path, channel)
    workflow.run(runtime)
    assert len(persistor.saved) == 10
    for r, model in enumerate(persistor.saved):
        assert model["numpy_key"].dtype == np.float32
        np.testing.assert_array_equal(model["numpy_key"], INITIAL["numpy_key"] + r + 1)
    assert runtime.progress.phase == "finished"
    assert channel.refused() == []


def test_round_tasks_carry_round_headers_and_cookie(tmp_path):
    seen: list[Shareable] = []

    def record(site, task, round_):
        seen.append(task)
        return add_delta()(site, task, round_)

    workflow, _ = make_workflow(min_clients=1, num_rounds=2, train_task_name="train")
    workflow.run(make_runtime(tmp_path, FakeChannel({"site-1": record})))
    assert [t.get_header("current_round") for t in seen] == [0, 1]
    assert all(t.get_header("num_rounds") == 2 and t.task_name == "train" for t in seen)
    assert [t.cookie_jar["contribution_round"] for t in seen] == [0, 1]


def test_lifecycle_events_in_order(tmp_path):
    workflow, _ = make_workflow(min_clients=1, num_rounds=1)
    runtime = make_runtime(tmp_path, FakeChannel({"site-1": add_delta()}))
    workflow.run(runtime)
    assert [e.type for e in runtime.events] == [
        EventType.INITIAL_MODEL_LOADED,
        EventType.TRAINING_STARTED,
        EventType.ROUND_STARTED,
        EventType.BEFORE_CONTRIBUTION_ACCEPT,
        EventType.AFTER_CONTRIBUTION_ACCEPT,
        EventType.BEFORE_AGGREGATION,
        EventType.AFTER_AGGREGATION,
        EventType.BEFORE_MODEL_UPDATE,
        EventType.AFTER_MODEL_UPDATE,
        EventType.BEFORE_SAVE,
        EventType.AFTER_SAVE,
        EventType.ROUND_DONE,
        EventType.TRAINING_FINISHED,
    ]


def silent(site, task, round_):
    return []


def test_silent_client_with_min_clients_met_ends_at_wait_time(tmp_path):
    workflow, persistor = make_workflow(min_clients=1, num_rounds=2, wait_time_after_min_received=0.3)
    channel = FakeChannel({"site-1": add_delta(), "site-2": silent})
    started = time.monotonic()
    workflow.run(make_runtime(tmp_path, channel))
    elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 5
    np.testing.assert_array_equal(persistor.saved[-1]["numpy_key"], INITIAL["numpy_key"] + 2)


def test_silent_client_ends_round_at_train_timeout(tmp_path):
    workflow, persistor = make_workflow(
        min_clients=2, num_rounds=1, wait_time_after_min_received=100, train_timeout=0.4
    )
    channel = FakeChannel({"site-1": add_delta(), "site-2": silent, "site-3": add_delta()})
    started = time.monotonic()
    workflow.run(make_runtime(tmp_path, channel))
    assert 0.4 <= time.monotonic() - started < 5
    np.testing.assert_array_equal(persistor.saved[-1]["numpy_key"], INITIAL["numpy_key"] + 1)


def test_round_ends_at_once_when_every_target_answered(tmp_path):
    workflow, _ = make_workflow(min_clients=1, num_rounds=3, wait_time_after_min_received=100, train_timeout=100)
    started = time.monotonic()
    workflow.run(make_runtime(tmp_path, FakeChannel({"site-1": add_delta(), "site-2": add_delta()})))
    assert time.monotonic() - started < 5


def test_duplicate_late_wrong_task_and_error_results_are_refused(tmp_path):
    def noisy(site, task, round_):
        good = add_delta()(site, task, round_)[0]
        twin = add_delta(100)(site, task, round_)[0]  # a second answer: must not be counted
        stray = add_delta(1000)(site, task, round_)[0]
        stray.cookie_jar = {"contribution_round": round_ - 1}  # a late answer to the previous round
        other_task = add_delta(1000)(site, task, round_)[0]
        other_task.task_id = "not-this-task"
        return [stray, good, twin, other_task] if round_ > 0 else [good, twin]

    def failing(site, task, round_):
        return [make_reply(ReturnCode.EXECUTION_EXCEPTION)]

    workflow, persistor = make_workflow(min_clients=1, num_rounds=2, wait_time_after_min_received=0.2)
    channel = FakeChannel({"site-1": noisy, "site-2": failing})
    workflow.run(make_runtime(tmp_path, channel))
    np.testing.assert_array_equal(persistor.saved[-1]["numpy_key"], INITIAL["numpy_key"] + 2)
    reasons = [s.reason for s in channel.refused()]
    assert any("second result from site-1" in r for r in reasons)
    assert any("late or stray" in r for r in reasons)
    assert any("not the current task" in r for r in reasons)
    assert any("EXECUTION_EXCEPTION" in r for r in reasons)


def test_unexpected_data_kind_is_refused(tmp_path):
    def metrics(site, task, round_):
        return [DXO(DataKind.METRICS, {"loss": 0.5}).to_shareable()]

    workflow, persistor = make_workflow(min_clients=1, num_rounds=1, wait_time_after_min_received=0.1)
    channel = FakeChannel({"site-1": add_delta(), "site-2": metrics})
    workflow.run(make_runtime(tmp_path, channel))
    assert [s.site for s in channel.refused()] == ["site-2"]
    assert "METRICS" in channel.refused()[0].reason
    np.testing.assert_array_equal(persistor.saved[-1]["numpy_key"], INITIAL["numpy_key"] + 1)


def test_a_run_whose_rounds_accepted_nothing_fails_with_the_reason(tmp_path):
    def bad_data(site, task, round_):
        return [make_reply(ReturnCode.BAD_TASK_DATA)]

    workflow, persistor = make_workflow(min_clients=2, num_rounds=3, train_timeout=0.2)
    runtime = make_runtime(tmp_path, FakeChannel({"site-1": bad_data, "site-2": silent}))
    with pytest.raises(WorkflowFailed) as failed:
        workflow.run(runtime)
    assert str(failed.value) == (
        "round 0: 0 of 2 results accepted: site-1 return code BAD_TASK_DATA; site-2 sent no result"
        " (and 2 more rounds like it)"
    )
    assert persistor.saved == [] and runtime.checkpoint() is None
    assert EventType.TRAINING_FINISHED not in [e.type for e in runtime.events]


def test_an_empty_round_among_good_ones_is_said_but_does_not_fail_the_run(tmp_path):
    def bad_in_round_one(site, task, round_):
        return [make_reply(ReturnCode.BAD_TASK_DATA)] if round_ == 1 else add_delta()(site, task, round_)

    workflow, persistor = make_workflow(min_clients=1, num_rounds=3)
    runtime = make_runtime(tmp_path, FakeChannel({"site-1": bad_in_round_one}))
    workflow.run(runtime)
    assert runtime.progress.phase == "finished" and len(persistor.saved) == 2
    done = [e for e in runtime.events if e.type == EventType.ROUND_DONE]
    assert [e.data.get("below_min_clients") for e in done] == [
        None,
        "round 1: 0 of 1 results accepted: site-1 return code BAD_TASK_DATA (min_clients=1)",
        None,
    ]


def test_a_round_below_min_clients_says_so_in_the_log_and_the_event(tmp_path, caplog):
    def bad_data(site, task, round_):
        return [make_reply(ReturnCode.BAD_TASK_DATA)]

    workflow, persistor = make_workflow(min_clients=2, num_rounds=1)
    runtime = make_runtime(tmp_path, FakeChannel({"site-1": add_delta(), "site-2": bad_data}))
    with caplog.at_level(logging.WARNING):
        workflow.run(runtime)
    expected = "round 0: 1 of 2 results accepted: site-2 return code BAD_TASK_DATA (min_clients=2)"
    (done,) = [e for e in runtime.events if e.type == EventType.ROUND_DONE]
    assert done.data["below_min_clients"] == expected and done.data["accepted"] == 1
    assert expected in caplog.text
    assert runtime.progress.phase == "finished" and len(persistor.saved) == 1  # what arrived still counts


def test_waits_for_min_clients_then_abort_stops_it(tmp_path, caplog):
    caplog.set_level("INFO", logger="fl_broker.fl.scatter_gather")
    workflow, _ = make_workflow(min_clients=3, num_rounds=5)
    channel = FakeChannel({"site-1": add_delta()})
    runtime = make_runtime(tmp_path, channel)
    thread = threading.Thread(target=workflow.run, args=(runtime,))
    thread.start()
    time.sleep(0.3)
    assert channel.sent == [] and runtime.progress.phase == "waiting for clients"
    waiting = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for clients")]
    assert waiting[0] == (
        f"waiting for clients: 1 of min_clients=3 have started their client app for run "
        f"{runtime.context.run_number} (site-1)"
    )
    runtime.abort_signal.trigger("test")
    thread.join(5)
    assert not thread.is_alive()
    assert runtime.progress.phase == "aborted"


def test_resumes_at_the_round_after_the_last_commit(tmp_path):
    workflow, persistor = make_workflow(min_clients=1, num_rounds=10)
    channel = FakeChannel({"site-1": add_delta()})
    runtime = make_runtime(tmp_path, channel)
    runtime.commit(7, {"numpy_key": INITIAL["numpy_key"] + 7})
    workflow.run(runtime)
    assert [r for r, _ in channel.sent] == [7, 8, 9]
    # the committed model is saved again first (the persistor may have missed it), then rounds 7, 8, 9
    assert [int(m["numpy_key"][0, 0]) for m in persistor.saved] == [8, 9, 10, 11]
    np.testing.assert_array_equal(persistor.saved[-1]["numpy_key"], INITIAL["numpy_key"] + 10)


def test_the_commit_not_the_persistor_decides_where_a_run_resumes(tmp_path):
    workflow, persistor = make_workflow(min_clients=1, num_rounds=4)
    persistor.saved.append({"numpy_key": INITIAL["numpy_key"] + 3})  # a persistor ahead of the commit
    runtime = make_runtime(tmp_path, FakeChannel({"site-1": add_delta()}))
    runtime.commit(2, {"numpy_key": INITIAL["numpy_key"] + 2})
    workflow.run(runtime)
    np.testing.assert_array_equal(persistor.saved[-1]["numpy_key"], INITIAL["numpy_key"] + 4)
    checkpoint = runtime.checkpoint()
    assert checkpoint is not None and checkpoint.next_round == 4
    np.testing.assert_array_equal(checkpoint.model["numpy_key"], INITIAL["numpy_key"] + 4)


def test_weight_diff_results_are_added_to_the_model(tmp_path):
    from fl_broker.fl.aggregation import InTimeAccumulateWeightedAggregator

    def diff(delta):
        def behave(site, task, round_):
            data = {k: np.full_like(v, delta) for k, v in task.dxo.data.items()}
            return [DXO(DataKind.WEIGHT_DIFF, data).to_shareable()]

        return behave

    aggregator = InTimeAccumulateWeightedAggregator(expected_data_kind="WEIGHT_DIFF")
    workflow, persistor = make_workflow(aggregator=aggregator, min_clients=2, num_rounds=2)
    workflow.run(make_runtime(tmp_path, FakeChannel({"site-1": diff(1.0), "site-2": diff(3.0)})))
    np.testing.assert_array_equal(persistor.saved[-1]["numpy_key"], INITIAL["numpy_key"] + 4)


def test_aggregation_weights_per_site(tmp_path):
    from fl_broker.fl.aggregation import InTimeAccumulateWeightedAggregator

    aggregator = InTimeAccumulateWeightedAggregator(aggregation_weights={"site-1": 3.0, "site-2": 1.0})
    workflow, persistor = make_workflow(aggregator=aggregator, min_clients=2, num_rounds=1)
    workflow.run(make_runtime(tmp_path, FakeChannel({"site-1": add_delta(0), "site-2": add_delta(4)})))
    np.testing.assert_array_equal(persistor.saved[-1]["numpy_key"], INITIAL["numpy_key"] + 1)  # (3*0 + 1*4) / 4


@pytest.mark.parametrize(
    "args, message",
    [
        ({"min_clients": 0}, "min_clients"),
        ({"num_rounds": -1}, "num_rounds"),
        ({"start_round": 5, "num_rounds": 3}, "start_round"),
        ({"train_timeout": -1}, "train_timeout"),
    ],
)
def test_bad_arguments_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        make_workflow(**args)


def test_collaborators_are_constructor_arguments():
    with pytest.raises(TypeError, match="aggregator"):
        ScatterAndGather(persistor=MemoryPersistor(INITIAL), shareable_generator=FullModelShareableGenerator())


def test_a_result_in_hand_is_settled_when_the_workflow_fails(tmp_path):
    def failing(site, task, round_):
        return [make_reply(ReturnCode.EXECUTION_EXCEPTION)]

    workflow, _ = make_workflow(min_clients=1, num_rounds=1, ignore_result_error=False)
    channel = FakeChannel({"site-1": failing})
    with pytest.raises(RuntimeError, match="site-1 failed the task"):
        workflow.run(make_runtime(tmp_path, channel))
    assert [(s.site, s.reason) for s in channel.settled] == [
        ("site-1", "the workflow failed while handling this result")
    ]


def poisoned(make_data, steps=1):
    """A site whose every result carries `make_data(task_weights)` with NUM_STEPS_CURRENT_ROUND `steps`."""

    def behave(site, task, round_):
        data = make_data(task.dxo.data["numpy_key"])
        return [DXO(DataKind.WEIGHTS, data, meta={"NUM_STEPS_CURRENT_ROUND": steps}).to_shareable()]

    return behave


@pytest.mark.parametrize(
    "bad, reason",
    [
        (poisoned(lambda w: {}), "carries no arrays to aggregate"),
        (poisoned(lambda w: {"numpy_key": [[1.0, 2.0, 3.0], [4.0, 5.0], [6.0]]}), "is not a regular array"),
        (poisoned(lambda w: {"numpy_key": w + 1}, steps=float("nan")), "must be a finite number, got nan"),
        (poisoned(lambda w: {"numpy_key": w + 1}, steps=1e30), "outside the accepted"),
        (poisoned(lambda w: {"numpy_key": np.full_like(w, 3.4e38)}, steps=10), "could overflow the float32 sum"),
    ],
)
def test_a_poisoned_contribution_is_refused_and_the_run_ends_with_the_honest_weights(tmp_path, bad, reason):
    workflow, persistor = make_workflow(min_clients=1, num_rounds=3, wait_time_after_min_received=5)
    channel = FakeChannel({"site-1": add_delta(), "site-2": bad})
    runtime = make_runtime(tmp_path, channel)
    workflow.run(runtime)
    assert runtime.progress.phase == "finished"
    np.testing.assert_array_equal(persistor.saved[-1]["numpy_key"], INITIAL["numpy_key"] + 3)
    refused = channel.refused()
    assert [s.site for s in refused] == ["site-2"] * 3 and all(reason in s.reason for s in refused)


class BrokenAggregator(InTimeAccumulateWeightedAggregator):
    """Aggregates normally, then damages the result in round `bad_round` as `damage` says."""

    def __init__(self, bad_round: int, damage) -> None:
        super().__init__()
        self.bad_round, self.damage, self.rounds = bad_round, damage, 0

    def aggregate(self) -> DXO:
        result = super().aggregate()
        if self.rounds == self.bad_round:
            result = DXO(result.data_kind, self.damage(result.data["numpy_key"]))
        self.rounds += 1
        return result


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda w: {"numpy_key": w * np.nan}, "'numpy_key' contains NaN or Inf"),
        (lambda w: {"numpy_key": w[:2]}, "'numpy_key' has shape (2, 3)"),
        (lambda w: {"numpy_key": w.astype(np.float64)}, "'numpy_key' has dtype float64"),
        (lambda w: {"numpy_key": w, "extra": w}, "'extra' is not in the global model"),
    ],
)
def test_an_aggregate_that_does_not_fit_fails_its_round_only(tmp_path, caplog, damage, reason):
    workflow, persistor = make_workflow(aggregator=BrokenAggregator(1, damage), min_clients=2, num_rounds=3)
    runtime = make_runtime(tmp_path, FakeChannel({"site-1": add_delta(), "site-2": add_delta()}))
    with caplog.at_level(logging.ERROR, logger="fl_broker.fl.scatter_gather"):
        workflow.run(runtime)
    assert runtime.progress.phase == "finished"
    assert len(persistor.saved) == 2  # round 1's aggregate never became the global model
    np.testing.assert_array_equal(persistor.saved[-1]["numpy_key"], INITIAL["numpy_key"] + 2)
    assert f"round 1 failed: the aggregate does not fit the global model: {reason}" in caplog.text
    done = [e for e in runtime.events if e.type == EventType.ROUND_DONE]
    assert [e.data.get("failed") is not None for e in done] == [False, True, False]


def test_a_round_whose_weights_are_all_zero_fails_and_the_run_goes_on(tmp_path, caplog):
    def zero_steps(site, task, round_):
        result = add_delta()(site, task, round_)[0]
        result.dxo.meta["NUM_STEPS_CURRENT_ROUND"] = 0 if round_ == 0 else 1
        return [result]

    workflow, persistor = make_workflow(min_clients=1, num_rounds=2)
    runtime = make_runtime(tmp_path, FakeChannel({"site-1": zero_steps}))
    with caplog.at_level(logging.ERROR):
        workflow.run(runtime)
    assert "round 0 failed: aggregation failed: nothing with a positive weight was added" in caplog.text
    np.testing.assert_array_equal(persistor.saved[-1]["numpy_key"], INITIAL["numpy_key"] + 1)
    assert runtime.progress.phase == "finished" and runtime.progress.rounds_done == 2
