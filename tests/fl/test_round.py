"""The checks a result must pass to count in a round: pure, with typed reasons."""

from __future__ import annotations

import numpy as np
import pytest

from fl_broker.fl.round import Refusal, RefusalKind, RoundState, check_against_model, check_result
from fl_broker.fl.workflow import TaskResult
from fl_broker.wire.messages import DXO, DataKind, ReturnCode, make_reply

MODEL = {"w": np.zeros((2, 2), np.float32)}


class Unsettled:
    """A delivery that must not be settled: checking a result is not deciding about it."""

    def ack(self) -> None:
        raise AssertionError("a check settled a result")

    def reject(self, reason: str) -> None:
        raise AssertionError("a check settled a result")


def state() -> RoundState:
    return RoundState(round=3, task_id="run1-train-round3", targets=frozenset({"site-1", "site-2"}), model=MODEL)


def result(site="site-1", *, round_=3, task_id="run1-train-round3", data=None, kind=DataKind.WEIGHTS, reply=None):
    shareable = reply or DXO(kind, data if data is not None else {"w": np.ones((2, 2), np.float32)}).to_shareable()
    shareable.task_id = task_id
    shareable.cookie_jar = {"contribution_round": round_}
    return TaskResult(site=site, task_id=task_id, round=round_, shareable=shareable, delivery=Unsettled())


def test_a_good_result_passes():
    assert check_result(state(), result(), allow_non_finite=False) is None


@pytest.mark.parametrize(
    "make, kind, detail",
    [
        (lambda: result(round_=2), RefusalKind.OTHER_ROUND, "result is for round 2, the current round is 3 (late"),
        (
            lambda: result(task_id="x"),
            RefusalKind.OTHER_TASK,
            "result is for task 'x', not the current task of round 3",
        ),
        (lambda: result("site-9"), RefusalKind.NOT_SENT, "site-9 was not sent this task"),
        (lambda: result(reply=make_reply(ReturnCode.EXECUTION_EXCEPTION)), RefusalKind.TASK_FAILED, "return code"),
        (lambda: result(data={"v": np.ones(2, np.float32)}), RefusalKind.MISFIT, "'v' is not in the global model"),
        (lambda: result(data={"w": np.ones(3, np.float32)}), RefusalKind.MISFIT, "has shape (3,)"),
        (lambda: result(data={"w": np.ones((2, 2))}), RefusalKind.MISFIT, "has dtype float64"),
        (lambda: result(data={"w": np.full((2, 2), np.nan, np.float32)}), RefusalKind.MISFIT, "NaN or Inf"),
    ],
)
def test_refusals_have_a_kind_and_the_words_people_read(make, kind, detail):
    refusal = check_result(state(), make(), allow_non_finite=False)
    assert isinstance(refusal, Refusal) and refusal.kind is kind
    assert refusal.detail.startswith(detail) or detail in refusal.detail
    assert str(refusal) == refusal.detail


def test_a_result_without_a_dxo_is_refused():
    bare = result(reply=make_reply(ReturnCode.OK))
    refusal = check_result(state(), bare, allow_non_finite=False)
    assert refusal == Refusal(RefusalKind.NO_DXO, "result carries no DXO")


def test_checking_changes_nothing_and_recording_is_explicit():
    round_state = state()
    before = (set(round_state.answered), round_state.accepted, round_state.min_reached_at, MODEL["w"].copy())
    misfit = check_result(round_state, result(data={"w": np.ones(3, np.float32)}), allow_non_finite=False)
    assert misfit is not None
    failed = check_result(round_state, result(reply=make_reply(ReturnCode.EXECUTION_EXCEPTION)), allow_non_finite=False)
    assert failed is not None
    after = (round_state.answered, round_state.accepted, round_state.min_reached_at, round_state.model["w"])
    assert after[:3] == before[:3] and np.array_equal(after[3], before[3])  # pure checks
    round_state.record("site-1", misfit)  # a misfit is still site-1's answer to this round
    assert round_state.answered == {"site-1"} and round_state.accepted == 0
    duplicate = check_result(round_state, result(), allow_non_finite=False)
    assert duplicate is not None and duplicate.kind is RefusalKind.DUPLICATE
    round_state.record("site-1", duplicate)
    round_state.record("site-2", None)
    assert round_state.answered == {"site-1", "site-2"} and round_state.accepted == 1


def test_refusals_that_are_not_the_sites_answer_leave_it_waited_for():
    round_state = state()
    for kind in (RefusalKind.OTHER_ROUND, RefusalKind.OTHER_TASK, RefusalKind.NOT_SENT, RefusalKind.DUPLICATE):
        round_state.record("site-1", Refusal(kind, "x"))
    assert round_state.answered == set()
    for kind in (RefusalKind.TASK_FAILED, RefusalKind.NO_DXO, RefusalKind.MISFIT, RefusalKind.AGGREGATOR):
        assert kind.is_answer


def test_other_data_kinds_are_left_to_the_aggregator():
    metrics = result(data={"loss": 0.5}, kind=DataKind.METRICS)
    assert check_result(state(), metrics, allow_non_finite=False) is None


def test_non_finite_values_pass_when_allowed():
    data = {"w": np.full((2, 2), np.inf, np.float32)}
    assert check_against_model(data, MODEL, allow_non_finite=True) is None
    assert check_against_model(data, MODEL, allow_non_finite=False) == "'w' contains NaN or Inf"
