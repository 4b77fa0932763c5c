"""The server's side of the task protocol (`fl_broker.protocol.tasks`): publish a task to sites, hand
their results to the running controller. It is the TaskChannel a workflow is given."""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

from fl_broker.errors import ConnectionLost, MessageRefused, PublishFailed
from fl_broker.fl.workflow import TaskResult
from fl_broker.protocol.tasks import ResultMessage, TaskMessage, sent_by_its_site
from fl_broker.server.task_copies import RESEND_AFTER, Report, TaskCopies
from fl_broker.transport import Delivery, Subscription, Transport
from fl_broker.transport.chunking import Body
from fl_broker.transport.spool import SpoolOptions, release_pages
from fl_broker.wire import names
from fl_broker.wire.messages import Shareable

log = logging.getLogger(__name__)


class BrokerTaskChannel:
    """Consumes the server's result queue for the life of the server; results of the active run are queued
    for the controller as soon as they are reassembled (holding them back would only leave their raw chunks
    in the consumer's prefetch buffer), the rest are dead-lettered with the reason. A task copy that never
    reached its site is sent again (see task_copies.py); `report` gives a site's latest status for that."""

    def __init__(
        self,
        transport: Transport,
        *,
        enforce_site_users: bool = False,
        spool_dir: Path | None = None,
        report: Report = lambda site: None,
        resend_after: float = RESEND_AFTER,
    ) -> None:
        self.transport = transport
        self.copies = TaskCopies(
            report=report,
            publish=self._publish_copy,
            resend_after=resend_after,
            interruptions=lambda: transport.interruptions,
        )
        # Results are spooled to disk chunk by chunk (and acked as they arrive), so that many sites'
        # interleaved uploads can never fill the consumer's prefetch window with partial results.
        self.spool = SpoolOptions(spool_dir) if spool_dir is not None else None
        self.enforce_site_users = enforce_site_users
        self._inbox: queue.Queue[TaskResult] = queue.Queue()
        self._active_run: int | None = None
        self._lock = threading.Lock()
        self._subscription: Subscription | None = None

    def start(self) -> None:
        """Start consuming results."""
        self._subscription = self.transport.consume(names.SERVER_RESULT_QUEUE, self._on_result, spool=self.spool)

    def stop(self) -> None:
        """Stop consuming; results not yet taken are redelivered to the next consumer."""
        self.close_run()
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None

    def open_run(self, run: int) -> None:
        """Results of `run` are now wanted."""
        with self._lock:
            self._active_run = run
        self.copies.clear()

    def close_run(self) -> None:
        """No run is active; results waiting in the inbox are refused."""
        with self._lock:
            self._active_run = None
        self.copies.clear()
        while True:
            try:
                self._inbox.get_nowait().refuse("the run ended before this result was used")
            except queue.Empty:
                return

    def send(self, task: Shareable, targets: Sequence[str], *, round: int) -> None:
        """Publish `task` to every target's task queue (one encode, one publish). A publish the broker refuses
        or a lost connection is logged and tried again from `receive()`, as a copy that never arrived is."""
        run = self._active_run or 0
        body = TaskMessage(run, round, task).encode_pieces()  # shares the model's memory: no copy of it
        first, *others = targets
        # One publish for every target (RabbitMQ's BCC header adds routing keys and is stripped on delivery):
        # a large model goes to the broker once, not once per site.
        headers = {"BCC": list(others)} if others else None
        label = f"run {run} round {round}"
        message_id = uuid.uuid4().hex  # the site skips this copy if a later round supersedes it (task_copies.py)
        try:
            # Not persistent: this server makes it again (task_copies.py), and a broker's disk write of a model
            # per round is work nobody needs. Unconfirmed too (a body that needs no chunks; a chunked one is
            # confirmed all the same): the workflow goes on to commit the last round at once instead of waiting
            # for a hop to the I/O thread and the broker's confirm. A copy the broker never got (connection
            # lost, nothing bound) is one its site never reports holding, and TaskCopies sends it again.
            self.transport.publish(
                names.TASK_EXCHANGE,
                first,
                body,
                message_id=message_id,
                correlation_id=task.task_id,
                headers=headers,
                persistent=False,
                confirm=False,
            )
        except (PublishFailed, ConnectionLost) as exc:
            log.error("%s: could not send %r to %s (%s); trying again", label, task.task_name, list(targets), exc)
            self.copies.sent(task.task_id, round, label, body, list(targets), published=False, message_id=message_id)
            return
        self.copies.sent(task.task_id, round, label, body, list(targets), published=True, message_id=message_id)
        log.info("%s: sent %r to %s (%d bytes each)", label, task.task_name, list(targets), len(body))

    def _publish_copy(self, site: str, body: Body, task_id: str, message_id: str) -> None:
        self.transport.publish(
            names.TASK_EXCHANGE, site, body, message_id=message_id, correlation_id=task_id, persistent=False
        )

    def receive(self, timeout: float) -> TaskResult | None:
        """The next result of the active run, or None after `timeout` seconds. Sends again, first, the task
        copies that are due (see task_copies.py)."""
        self.copies.check()
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def _on_result(self, delivery: Delivery) -> None:
        try:
            message = ResultMessage.decode_delivery(
                delivery,
                expected_sender=sent_by_its_site if self.enforce_site_users else None,
                max_size=self.transport.options.max_body_size,
            )
        except MessageRefused as exc:
            log.warning("dead-lettering a bad result: %s", exc)
            delivery.reject(str(exc))
            return
        release_pages(delivery.body)  # decoded into views, not yet written: it may wait its turn off the RSS
        self.copies.answered(message.site, message.shareable.task_id)
        result = TaskResult(message.site, message.shareable.task_id, message.round, message.shareable, delivery)
        with self._lock:  # one check with the put, so close_run() refuses whatever got queued
            active = self._active_run
            if active == message.run:
                self._inbox.put(result)
                return
        reason = f"result for run {message.run}, but the active run is {active}"
        log.warning("refused result from %s: %s", message.site, reason)
        delivery.reject(reason)
