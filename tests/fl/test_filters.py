"""The filter chain: filters run in the config's order; one that raises or returns something else refuses
the Shareable with FLARE's filter-error return code and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from fl_broker.fl.context import RunContext
from fl_broker.fl.filters import Direction, Filter, FilterChains, FilterContext, FilterError, is_filter_error
from fl_broker.wire.messages import Header, ReturnCode, Shareable


class Mark(Filter):
    """Appends its letter to the 'trail' header."""

    def __init__(self, letter: str) -> None:
        self.letter = letter

    def process(self, shareable, fl_ctx):
        shareable.set_header("trail", shareable.get_header("trail", "") + self.letter)
        return shareable


class Boom(Filter):
    def process(self, shareable, fl_ctx):
        raise KeyError("no such layer")


class Nothing(Filter):
    def process(self, shareable, fl_ctx):
        return {"not": "a Shareable"}


class WantsTask(Mark):
    needs_task_data = True


def fl_ctx(direction: Direction, task_name: str = "train") -> FilterContext:
    run = RunContext("site-1", 1, Path("/nonexistent"), Path("/nonexistent"))
    return FilterContext(run=run, direction=direction, task_name=task_name, task_id="t", peer="server")


def task() -> Shareable:
    return Shareable(task_name="train", task_id="t", cookie_jar={Header.CONTRIBUTION_ROUND: 3})


def test_filters_run_in_order_for_their_task_and_direction_only():
    chains = FilterChains(
        task_data={"train": [Mark("a"), Mark("b")], "validate": [Mark("v")]},
        task_result={"train": [Mark("r")]},
        side="client",
    )
    assert chains.apply(task(), fl_ctx(Direction.TASK_DATA)).get_header("trail") == "ab"
    assert chains.apply(task(), fl_ctx(Direction.TASK_RESULT)).get_header("trail") == "r"
    assert chains.apply(task(), fl_ctx(Direction.TASK_DATA, "submit_model")).get_header("trail") is None


@pytest.mark.parametrize(
    ("direction", "code"),
    [
        (Direction.TASK_DATA, ReturnCode.TASK_DATA_FILTER_ERROR),
        (Direction.TASK_RESULT, ReturnCode.TASK_RESULT_FILTER_ERROR),
    ],
)
def test_a_filter_that_raises_refuses_with_the_filter_error_code_and_the_reason(direction, code):
    chains = FilterChains(task_data={"train": [Mark("a"), Boom()]}, task_result={"train": [Boom()]}, side="server")
    with pytest.raises(FilterError) as raised:
        chains.apply(task(), fl_ctx(direction))
    where = "[1]" if direction is Direction.TASK_DATA else "[0]"
    assert str(raised.value) == (
        f"server {direction.value}_filters['train']{where} Boom failed: KeyError: 'no such layer'"
    )
    reply = raised.value.reply(like=task())
    assert reply.return_code is code and is_filter_error(reply.return_code)
    assert reply.get_header(Header.ERROR_REASON) == str(raised.value)
    assert (reply.task_id, reply.task_name, reply.cookie_jar) == ("t", "train", {Header.CONTRIBUTION_ROUND: 3})


def test_a_filter_that_returns_something_else_refuses_naming_what_it_returned():
    chains = FilterChains(task_result={"train": [Nothing(), Mark("never")]}, side="client")
    with pytest.raises(FilterError, match=r"client task_result_filters\['train'\]\[0\] Nothing returned dict, not a"):
        chains.apply(task(), fl_ctx(Direction.TASK_RESULT))


def test_only_a_result_chain_with_a_filter_that_asks_keeps_the_task():
    chains = FilterChains(task_data={"train": [WantsTask("x")]}, task_result={"train": [Mark("a"), WantsTask("b")]})
    assert chains.needs_task_data("train") and not chains.needs_task_data("validate")
    assert not FilterChains(task_result={"train": [Mark("a")]}).needs_task_data("train")


def test_the_context_of_a_task_reads_its_round():
    run = RunContext("server", 2, Path("/nonexistent"), Path("/nonexistent"))
    shareable = task()
    shareable.set_header(Header.CURRENT_ROUND, 4)
    made = FilterContext.for_task(run, Direction.TASK_DATA, shareable, peer="site-2")
    assert (made.current_round, made.peer, made.site_name, made.task_name) == (4, "site-2", "server", "train")
