"""FLARE's filters: components that transform a Shareable on its way between server and sites.

Four chains, configured per task name in the app's configs (`task_data_filters`, `task_result_filters` in
config_fed_server.json and config_fed_client.json), with FLARE's placement:

- server, task data: on each task before it goes out to a site (once per site, so a filter may differ
  by site);
- client, task data: on the task a site received, before its executor sees it;
- client, task result: on the executor's result, before it is sent;
- server, task result: on each result received, before the workflow (and its aggregator) sees it.

A filter that raises, or returns something that is not a Shareable, refuses that task or result: the
chain raises FilterError, and the caller answers with FLARE's TASK_DATA_FILTER_ERROR or
TASK_RESULT_FILTER_ERROR, the reason in the reply's `error_reason` header.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Protocol, runtime_checkable

from fl_broker.fl.context import RunContext
from fl_broker.wire.messages import Header, ReturnCode, Shareable, make_reply


class Direction(str, Enum):
    """Which way the filtered Shareable travels: a task (server to site) or a result (site to server)."""

    TASK_DATA = "task_data"
    TASK_RESULT = "task_result"

    @property
    def return_code(self) -> ReturnCode:
        """The return code a refusal on this path answers with (FLARE's)."""
        if self is Direction.TASK_DATA:
            return ReturnCode.TASK_DATA_FILTER_ERROR
        return ReturnCode.TASK_RESULT_FILTER_ERROR


@dataclass(frozen=True)
class FilterContext:
    """What a filter knows of where it runs (FLARE's fl_ctx): the participant and run, the task, the peer
    at the other end, and which way the Shareable travels."""

    run: RunContext  # the participant the filter runs on ("server" or the site) and its run
    direction: Direction
    task_name: str
    task_id: str
    peer: str  # the other end: the site on the server, "server" on a site
    current_round: int | None = None
    # On a site's result path: the task as the executor was given it (after the task data filters), kept
    # only when a filter of the chain asks for it (Filter.needs_task_data). None elsewhere.
    task_data: Shareable | None = field(default=None, repr=False)

    @property
    def site_name(self) -> str:
        """The participant the filter runs on."""
        return self.run.site_name

    @classmethod
    def for_task(cls, run: RunContext, direction: Direction, task: Shareable, *, peer: str) -> FilterContext:
        """The context of filtering `task` (or its result) on `run`'s participant."""
        current = task.get_header(Header.CURRENT_ROUND)
        return cls(
            run=run,
            direction=direction,
            task_name=task.task_name,
            task_id=task.task_id,
            peer=peer,
            current_round=current if isinstance(current, int) and not isinstance(current, bool) else None,
        )


class Filter(ABC):
    """FLARE's Filter: `process(shareable, fl_ctx)` returns the Shareable to pass on (the same object
    changed, or a new one). Raise to refuse it: the task or result is then answered with the filter-error
    return code and the exception's message. Arrays received from the wire may be read-only: build new
    arrays rather than writing into the ones given."""

    # Set by a result filter that needs the task the executor was given (e.g. to compute an update from
    # returned WEIGHTS); the worker then keeps a copy of the task, since executors may change it in place.
    needs_task_data: ClassVar[bool] = False

    @abstractmethod
    def process(self, shareable: Shareable, fl_ctx: FilterContext) -> Shareable:
        """The filtered Shareable."""


@runtime_checkable
class FilterLike(Protocol):
    """Anything with FLARE's `process(shareable, fl_ctx)`: a Filter, or a FLARE app's own filter class."""

    def process(self, shareable: Shareable, fl_ctx: FilterContext) -> Any:
        """The filtered Shareable."""


class FilterError(Exception):
    """A filter refused a task or a result: the message names the chain, the filter and why."""

    def __init__(self, direction: Direction, message: str) -> None:
        super().__init__(message)
        self.direction = direction

    def reply(self, like: Shareable | None = None) -> Shareable:
        """The answer that replaces the refused Shareable: the filter-error return code, the reason in the
        `error_reason` header, and `like`'s task id, name and cookies (so the round it belongs to is known)."""
        reply = make_reply(self.direction.return_code)
        reply.set_header(Header.ERROR_REASON, str(self))
        if like is not None:
            reply.task_id, reply.task_name = like.task_id, like.task_name
            reply.cookie_jar = dict(like.cookie_jar)
        return reply


@dataclass(frozen=True)
class FilterChains:
    """One side's filters: task name -> the filters to apply, in order, for each direction."""

    task_data: Mapping[str, Sequence[FilterLike]] = field(default_factory=dict)
    task_result: Mapping[str, Sequence[FilterLike]] = field(default_factory=dict)
    side: str = ""  # "server" or "client", for messages

    def chain(self, direction: Direction, task_name: str) -> Sequence[FilterLike]:
        """The filters for `task_name` in `direction` (empty: nothing to do)."""
        table = self.task_data if direction is Direction.TASK_DATA else self.task_result
        return table.get(task_name, ())

    def needs_task_data(self, task_name: str) -> bool:
        """Whether a result filter of `task_name` wants the task the executor was given."""
        return any(getattr(f, "needs_task_data", False) for f in self.chain(Direction.TASK_RESULT, task_name))

    def apply(self, shareable: Shareable, fl_ctx: FilterContext) -> Shareable:
        """`shareable` through the chain of its task and direction, in the config's order. FilterError
        (naming side, chain, filter and reason) if a filter raises or returns something else."""
        for index, one in enumerate(self.chain(fl_ctx.direction, fl_ctx.task_name)):
            where = f"{self.side} {fl_ctx.direction.value}_filters[{fl_ctx.task_name!r}][{index}] {type(one).__name__}"
            try:
                out = one.process(shareable, fl_ctx)
            except Exception as exc:  # a broken filter refuses this task or result, never the program
                raise FilterError(fl_ctx.direction, f"{where} failed: {type(exc).__name__}: {exc}") from exc
            if not isinstance(out, Shareable):
                raise FilterError(fl_ctx.direction, f"{where} returned {type(out).__name__}, not a Shareable")
            shareable = out
        return shareable


NO_FILTERS = FilterChains()


def private_copy(shareable: Shareable) -> Shareable:
    """A deep copy (arrays included) for one use: a filter of one site's task must not change another's,
    and an executor must not change the task a result filter compares with."""
    return copy.deepcopy(shareable)


def is_filter_error(return_code: ReturnCode) -> bool:
    """Whether a result's return code says a filter refused it (on the site or on the way)."""
    return return_code in (ReturnCode.TASK_DATA_FILTER_ERROR, ReturnCode.TASK_RESULT_FILTER_ERROR)
