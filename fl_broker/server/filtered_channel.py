"""The server's filter chains around the task channel a workflow is given: `task_data_filters` on each
task before it goes out to a site, `task_result_filters` on each result before the workflow sees it.

A task a filter refuses is not sent to that site; the workflow gets, in its place, the site's answer
TASK_DATA_FILTER_ERROR with the reason, so the round does not wait for it. A result a filter refuses
reaches the workflow as TASK_RESULT_FILTER_ERROR with the reason (the workflow refuses it, dead-lettering
the message). Both are logged and kept for show_errors, as are the filter errors that sites report.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

from fl_broker.fl.context import RunContext
from fl_broker.fl.filters import Direction, FilterChains, FilterContext, FilterError, is_filter_error, private_copy
from fl_broker.fl.workflow import TaskChannel, TaskResult
from fl_broker.wire import names
from fl_broker.wire.messages import Header, Shareable

log = logging.getLogger(__name__)

MAX_REASON = 1000  # characters of a site's reason kept: a site's text must not flood the server's errors


class _Nothing:
    """The delivery of an answer made on the server: there is no message to settle."""

    def ack(self) -> None:
        """Nothing to acknowledge."""

    def reject(self, reason: str) -> None:
        """Nothing to dead-letter (the refusal was logged when the answer was made)."""


class FilteredChannel:
    """A TaskChannel that runs the server's filter chains around another one (the broker's)."""

    def __init__(
        self, inner: TaskChannel, filters: FilterChains, run: RunContext, *, on_error: Callable[[str], None]
    ) -> None:
        self.inner = inner
        self.filters = filters
        self.run = run
        self.on_error = on_error  # keeps an error for show_errors
        self._answers: collections.deque[TaskResult] = collections.deque()  # answers made here, given first

    def send(self, task: Shareable, targets: Sequence[str], *, round: int) -> None:
        """`task` to `targets`: as it is (one publish) when no data filter applies to it, else filtered for
        each site on a copy of its own."""
        if not self.filters.chain(Direction.TASK_DATA, task.task_name):
            self.inner.send(task, targets, round=round)
            return
        for site in targets:
            fl_ctx = FilterContext.for_task(self.run, Direction.TASK_DATA, task, peer=site)
            try:
                filtered = self.filters.apply(private_copy(task), fl_ctx)
            except FilterError as exc:
                self._error(site, task, round, exc)
                self._answers.append(TaskResult(site, task.task_id, round, exc.reply(like=task), _Nothing()))
                continue
            self.inner.send(filtered, [site], round=round)

    def receive(self, timeout: float) -> TaskResult | None:
        """The next result, through the result filters of its task."""
        if self._answers:
            return self._answers.popleft()
        result = self.inner.receive(timeout)
        if result is None:
            return None
        shareable = result.shareable
        if is_filter_error(shareable.return_code):  # a site's filter refused its task or result
            reason = str(shareable.get_header(Header.ERROR_REASON) or shareable.return_code.value)
            message = f"{result.site}: round {result.round}: {shareable.task_name}: {reason[:MAX_REASON]}"
            log.warning("%s", message)
            self.on_error(message)
            return result
        if not self.filters.chain(Direction.TASK_RESULT, shareable.task_name):
            return result
        fl_ctx = FilterContext.for_task(self.run, Direction.TASK_RESULT, shareable, peer=result.site)
        fl_ctx = replace(fl_ctx, current_round=result.round)  # a result need not carry the round's header
        try:
            return replace(result, shareable=self.filters.apply(shareable, fl_ctx))
        except FilterError as exc:
            self._error(result.site, shareable, result.round, exc)
            return replace(result, shareable=exc.reply(like=shareable))

    def _error(self, site: str, shareable: Shareable, round: int | None, exc: FilterError) -> None:
        what = "task for" if exc.direction is Direction.TASK_DATA else "result from"
        message = f"{names.SERVER}: round {round}: {shareable.task_name} {what} {site}: {exc}"
        log.error("%s", message)
        self.on_error(message)
