"""The task copies a round has sent and not had an answer for, and sending again those that never arrived.

A publish can fail while a broker node is lost, and on a cluster a confirmed publish can still miss a site's
queue (a binding gone, a queue re-created empty); a round would then wait for that site for ever. So every
copy is remembered until its site answers. A site's heartbeats report the task it holds (`task`), the last
one whose result the broker confirmed (`done`) and whether its app is started. A site that keeps reporting
no task at all, for `resend_after` seconds after a copy was sent, never got it: the copy is sent again to
that site alone. A copy that arrives twice is harmless: a site's result counts once per round.

When a task of a later round is sent, every unanswered copy of an earlier round is over: its result would be
refused as late. Such copies are forgotten (their bodies are models), but the message ids of their publishes
are kept per site (`superseded`): a site that was down meanwhile finds them in its queue when it comes back,
and the server tells it, as it starts the site's app again, to ack them untrained. Message ids, not task
ids: a restarted server that redoes a round sends its task again under the same task id, in a new message.

Tasks and results travel as non-persistent messages (a model-sized disk write on the broker for each is
most of its work in a large round, and both can be made again), so a broker restart loses those it holds.
A lost task shows as above. A lost result does not: its site reports it `done`. So a site's `done` counts
as "on the way" only while the server's connection has not been interrupted since the copy was sent
(`interruptions`); after an interruption, a site that shows no task and whose result has not arrived gets
its copy again after `resend_after`, and trains it anew.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fl_broker.errors import ConnectionLost, PublishFailed
from fl_broker.transport.chunking import Body

log = logging.getLogger(__name__)

RESEND_AFTER = 15.0  # seconds a site may report holding no task before its copy is sent again
_PUBLISH_RETRY_MAX = 15.0  # a copy whose publish failed is tried again after 1, 2, 4 ... s, at most this
SUPERSEDED_KEPT = 1000  # the newest message ids kept per site: a site gone for good costs a bounded list

Report = Callable[[str], "tuple[dict[str, Any], float] | None"]  # site -> (its own status, taken at), or None
Publish = Callable[[str, Body, str, str], None]  # (site, body, task id, message id): one copy to that site's queue


@dataclass
class _Copy:
    """One site's copy of a task: what to send again, and what its site has said since it was sent."""

    task_id: str
    round: int
    label: str  # for logs, e.g. "run 1 round 3"
    body: Body
    sent_at: float  # monotonic, of the last attempt
    published: bool
    interruptions: int  # the server transport's count when the copy was last sent (see the module doc)
    idle_since: float | None = None  # when the site was first seen holding no task since sent_at
    attempts: int = 1
    message_ids: list[str] = field(default_factory=list)  # of each publish of this copy


class TaskCopies:
    """Copies sent and not answered yet, per (site, task id); `check()` sends again those that are due."""

    def __init__(
        self,
        *,
        report: Report,
        publish: Publish,
        resend_after: float = RESEND_AFTER,
        interruptions: Callable[[], int] = lambda: 0,
    ) -> None:
        self._report = report
        self._publish = publish
        self._interruptions = interruptions
        self.resend_after = resend_after
        self._copies: dict[tuple[str, str], _Copy] = {}
        self._superseded: dict[str, list[str]] = {}  # site -> message ids of its copies of rounds that are over
        self._lock = threading.Lock()

    def sent(
        self, task_id: str, round: int, label: str, body: Body, sites: list[str], *, published: bool, message_id: str
    ) -> None:
        """A task of `round` went to `sites` in one publish, `message_id` (or failed to: `published`=False). A
        copy of an earlier round that a site never answered is forgotten: that round is over, and its body (a
        model) need not be kept; its message ids are kept as superseded."""
        now, count = time.monotonic(), self._interruptions()
        with self._lock:
            for key in [k for k, copy in self._copies.items() if copy.round < round]:
                ids = self._superseded.setdefault(key[0], [])
                ids += self._copies.pop(key).message_ids
                del ids[:-SUPERSEDED_KEPT]
            for site in sites:
                self._copies[(site, task_id)] = _Copy(
                    task_id, round, label, body, now, published, count, message_ids=[message_id]
                )

    def superseded(self, site: str) -> list[str]:
        """The message ids of `site`'s copies of rounds that are over (it never answered them), oldest first."""
        with self._lock:
            return list(self._superseded.get(site, ()))

    def answered(self, site: str, task_id: str) -> None:
        """A result of `site` for `task_id` arrived: its copy reached it."""
        with self._lock:
            self._copies.pop((site, task_id), None)

    def clear(self) -> None:
        """Forget every copy (a run opened or ended)."""
        with self._lock:
            self._copies.clear()
            self._superseded.clear()

    def pending(self) -> dict[str, list[str]]:
        """task id -> the sites it was sent to that have not answered it, for logs and tests."""
        with self._lock:
            found: dict[str, list[str]] = {}
            for site, task_id in sorted(self._copies):
                found.setdefault(task_id, []).append(site)
            return found

    def check(self) -> None:
        """Send again every copy that is due (called often by the thread that sends tasks)."""
        now = time.monotonic()
        with self._lock:
            due = [(site, copy) for (site, _), copy in self._copies.items() if self._due(site, copy, now)]
        for site, copy in due:
            self._resend(site, copy, now)

    def _due(self, site: str, copy: _Copy, now: float) -> bool:
        if not copy.published:
            return now - copy.sent_at >= min(_PUBLISH_RETRY_MAX, 2.0 ** (copy.attempts - 1))
        report = self._report(site)
        if report is None or report[1] <= copy.sent_at:
            return False  # no news from the site since the copy went
        status, taken_at = report
        holds_nothing = status.get("status") == "started" and status.get("task") is None
        on_the_way = status.get("done") == copy.task_id and self._interruptions() == copy.interruptions
        if not holds_nothing or on_the_way:
            copy.idle_since = None  # busy (this copy may wait behind another task), or its result is on the way
            return False
        if copy.idle_since is None:
            copy.idle_since = taken_at
        return taken_at - copy.idle_since >= self.resend_after

    def _resend(self, site: str, copy: _Copy, now: float) -> None:
        if copy.published:
            log.warning(
                "%s: %s has shown no task for %.1f s since %r was sent to it; sending it again",
                copy.label,
                site,
                now - (copy.idle_since or copy.sent_at),
                copy.task_id,
            )
        message_id = uuid.uuid4().hex
        count = self._interruptions()
        with self._lock:
            copy.message_ids.append(message_id)  # even if the publish fails: it may have got through
        published = self._try_publish(site, copy, message_id)
        with self._lock:
            if self._copies.get((site, copy.task_id)) is copy:  # not answered meanwhile
                copy.sent_at, copy.published, copy.idle_since = time.monotonic(), published, None
                copy.interruptions = count
                copy.attempts += 1

    def _try_publish(self, site: str, copy: _Copy, message_id: str) -> bool:
        try:
            self._publish(site, copy.body, copy.task_id, message_id)
            return True
        except (PublishFailed, ConnectionLost) as exc:
            log.error("%s: could not send %r to %s (%s); trying again", copy.label, copy.task_id, site, exc)
            return False
