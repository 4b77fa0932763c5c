"""The server's filter chains around the task channel: data filters per site before sending, result filters
before the workflow; refusals become filter-error answers, logged and kept for show_errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fl_broker.fl.context import RunContext
from fl_broker.fl.filters import Filter, FilterChains
from fl_broker.fl.workflow import TaskResult
from fl_broker.server.filtered_channel import FilteredChannel
from fl_broker.wire.messages import DXO, DataKind, Header, ReturnCode, Shareable, make_reply

RUN = RunContext("server", 1, Path("/nonexistent"), Path("/nonexistent"))


class Inner:
    """A task channel that records what is sent and hands out the results given to it."""

    def __init__(self, results=()):
        self.sent: list[tuple[Shareable, list[str]]] = []
        self.results = list(results)

    def send(self, task, targets, *, round):
        self.sent.append((task, list(targets)))

    def receive(self, timeout):
        return self.results.pop(0) if self.results else None


class Settled:
    def __init__(self):
        self.how = None

    def ack(self):
        self.how = "ack"

    def reject(self, reason):
        self.how = ("reject", reason)


class AddPeer(Filter):
    """Adds the number in the peer's name (site-N -> N) to every array: a different task per site."""

    def process(self, shareable, fl_ctx):
        dxo = shareable.dxo
        number = int(fl_ctx.peer.rsplit("-", 1)[1])
        shareable.dxo = DXO(dxo.data_kind, {k: v + number for k, v in dxo.data.items()}, dxo.meta)
        return shareable


class RefuseSite(Filter):
    def __init__(self, site, returns_none=False):
        self.site, self.returns_none = site, returns_none

    def process(self, shareable, fl_ctx):
        if fl_ctx.peer == self.site:
            if self.returns_none:
                return None
            raise RuntimeError(f"not for {self.site}, round {fl_ctx.current_round}")
        return shareable


def task() -> Shareable:
    shareable = DXO(DataKind.WEIGHTS, {"w": np.zeros(3)}).to_shareable()
    shareable.task_name, shareable.task_id = "train", "run1-train-round2"
    shareable.set_header(Header.CURRENT_ROUND, 2)
    shareable.cookie_jar[Header.CONTRIBUTION_ROUND] = 2
    return shareable


def channel(inner, **chains):
    errors: list[str] = []
    return FilteredChannel(inner, FilterChains(side="server", **chains), RUN, on_error=errors.append), errors


def test_without_a_data_filter_the_task_goes_to_every_site_in_one_send():
    inner = Inner()
    filtered, _ = channel(inner, task_data={"validate": [AddPeer()]})
    one = task()
    filtered.send(one, ["site-1", "site-2"], round=2)
    assert inner.sent == [(one, ["site-1", "site-2"])]


def test_each_site_gets_its_own_filtered_copy():
    inner = Inner()
    filtered, _ = channel(inner, task_data={"train": [AddPeer()]})
    original = task()
    filtered.send(original, ["site-1", "site-2"], round=2)
    assert [targets for _, targets in inner.sent] == [["site-1"], ["site-2"]]
    np.testing.assert_array_equal(inner.sent[0][0].dxo.data["w"], [1, 1, 1])
    np.testing.assert_array_equal(inner.sent[1][0].dxo.data["w"], [2, 2, 2])
    np.testing.assert_array_equal(original.dxo.data["w"], [0, 0, 0])  # the workflow's task is not changed


def test_a_refused_task_is_not_sent_and_answers_for_its_site_with_the_reason():
    inner = Inner()
    filtered, errors = channel(inner, task_data={"train": [RefuseSite("site-2", returns_none=True)]})
    filtered.send(task(), ["site-1", "site-2"], round=2)
    assert [targets for _, targets in inner.sent] == [["site-1"]]
    answer = filtered.receive(0)
    assert (answer.site, answer.round, answer.task_id) == ("site-2", 2, "run1-train-round2")
    assert answer.shareable.return_code is ReturnCode.TASK_DATA_FILTER_ERROR
    assert answer.shareable.cookie_jar == {Header.CONTRIBUTION_ROUND: 2}  # counts as the site's answer this round
    reason = "server task_data_filters['train'][0] RefuseSite returned NoneType, not a Shareable"
    assert answer.shareable.get_header(Header.ERROR_REASON) == reason
    assert errors == [f"server: round 2: train task for site-2: {reason}"]
    answer.accept()  # nothing to settle: no message came in
    assert filtered.receive(0) is None


def test_results_go_through_the_result_filters_and_a_refused_one_keeps_its_delivery():
    ok, refused = Settled(), Settled()
    results = [TaskResult(site, "run1-train-round2", 2, _result(), settle) for site, settle in
               (("site-1", ok), ("site-2", refused))]  # fmt: skip
    filtered, errors = channel(Inner(results), task_result={"train": [RefuseSite("site-2"), AddPeer()]})
    first = filtered.receive(0)
    np.testing.assert_array_equal(first.shareable.dxo.data["w"], [1, 1, 1])
    second = filtered.receive(0)
    assert second.shareable.return_code is ReturnCode.TASK_RESULT_FILTER_ERROR
    assert second.shareable.cookie_jar == {Header.CONTRIBUTION_ROUND: 2}
    assert "RefuseSite failed: RuntimeError: not for site-2, round 2" in second.shareable.get_header(
        Header.ERROR_REASON
    )
    second.refuse("return code TASK_RESULT_FILTER_ERROR")
    assert refused.how == ("reject", "return code TASK_RESULT_FILTER_ERROR")  # the message is dead-lettered
    assert errors == [
        "server: round 2: train result from site-2: server task_result_filters['train'][0] RefuseSite failed: "
        "RuntimeError: not for site-2, round 2"
    ]


def test_a_site_s_own_filter_error_is_kept_for_show_errors_and_passed_on():
    reply = make_reply(ReturnCode.TASK_RESULT_FILTER_ERROR)
    reply.task_name = "train"
    reply.set_header(Header.ERROR_REASON, "client task_result_filters['train'][0] X failed: ValueError: bad")
    filtered, errors = channel(Inner([TaskResult("site-1", "t", 3, reply, Settled())]))
    assert filtered.receive(0).shareable is reply
    assert errors == ["site-1: round 3: train: client task_result_filters['train'][0] X failed: ValueError: bad"]


def _result() -> Shareable:
    result = DXO(DataKind.WEIGHTS, {"w": np.zeros(3)}).to_shareable()
    result.task_name, result.task_id = "train", "run1-train-round2"
    result.cookie_jar[Header.CONTRIBUTION_ROUND] = 2
    return result
