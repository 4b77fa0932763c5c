"""Scatter-and-Gather semantics: rounds, early end, timeouts, refusals, events, resume."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

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


def test_no_accepted_result_keeps_the_model(tmp_path):
    workflow, persistor = make_workflow(min_clients=1, num_rounds=1, train_timeout=0.2)
    workflow.run(make_runtime(tmp_path, FakeChannel({"site-1": silent})))
    assert persistor.saved == []


def test_waits_for_min_clients_then_abort_stops_it(tmp_path):
    workflow, _ = make_workflow(min_clients=3, num_rounds=5)
    channel = FakeChannel({"site-1": add_delta()})
    runtime = make_runtime(tmp_path, channel)
    thread = threading.Thread(target=workflow.run, args=(runtime,))
    thread.start()
    time.sleep(0.3)
    assert channel.sent == [] and runtime.progress.phase == "waiting for clients"
    runtime.abort_signal.trigger("test")
    thread.join(5)
    assert not thread.is_alive()
    assert runtime.progress.phase == "aborted"


def test_resumes_at_the_round_after_the_last_saved(tmp_path):
    workflow, persistor = make_workflow(min_clients=1, num_rounds=10)
    channel = FakeChannel({"site-1": add_delta()})
    runtime = make_runtime(tmp_path, channel)
    runtime.save_next_round(7)
    persistor.saved.append({"numpy_key": INITIAL["numpy_key"] + 7})
    workflow.run(runtime)
    assert [r for r, _ in channel.sent] == [7, 8, 9]
    np.testing.assert_array_equal(persistor.saved[-1]["numpy_key"], INITIAL["numpy_key"] + 10)


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
