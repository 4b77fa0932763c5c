"""The server's side of tasks: publish a task to sites, hand their results to the running controller."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence

from fl_broker.errors import DecodeError
from fl_broker.fl.workflow import TaskResult
from fl_broker.transport import Delivery, Subscription, Transport
from fl_broker.wire import names
from fl_broker.wire.envelope import Envelope, decode_envelope, encode_envelope
from fl_broker.wire.messages import Shareable

log = logging.getLogger(__name__)


class BrokerTaskChannel:
    """Consumes the server's result queue for the life of the server; results of the active run are queued
    for the controller as soon as they are reassembled (holding them back would only leave their raw chunks
    in the consumer's prefetch buffer), the rest are dead-lettered with the reason."""

    def __init__(self, transport: Transport, *, enforce_site_users: bool = False) -> None:
        self.transport = transport
        self.enforce_site_users = enforce_site_users
        self._inbox: queue.Queue[TaskResult] = queue.Queue()
        self._active_run: int | None = None
        self._lock = threading.Lock()
        self._subscription: Subscription | None = None

    def start(self) -> None:
        """Start consuming results."""
        self._subscription = self.transport.consume(names.SERVER_RESULT_QUEUE, self._on_result)

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

    def close_run(self) -> None:
        """No run is active; results waiting in the inbox are refused."""
        with self._lock:
            self._active_run = None
        while True:
            try:
                self._inbox.get_nowait().refuse("the run ended before this result was used")
            except queue.Empty:
                return

    def send(self, task: Shareable, targets: Sequence[str], *, round: int) -> None:
        """Publish `task` to every target's task queue (one encode, one publish)."""
        run = self._active_run or 0
        body = encode_envelope(Envelope(kind="task", run=run, fields={"round": round}, shareable=task))
        first, *others = targets
        # One publish for every target (RabbitMQ's BCC header adds routing keys and is stripped on delivery):
        # a large model goes to the broker once, not once per site.
        headers = {"BCC": list(others)} if others else None
        self.transport.publish(names.TASK_EXCHANGE, first, body, correlation_id=task.task_id, headers=headers)
        log.info("run %d round %d: sent %r to %s (%d bytes each)", run, round, task.task_name, list(targets), len(body))

    def receive(self, timeout: float) -> TaskResult | None:
        """The next result of the active run, or None after `timeout` seconds."""
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def _on_result(self, delivery: Delivery) -> None:
        try:
            run, result = self._decode(delivery)
        except DecodeError as exc:
            log.warning("dead-lettering a bad result: %s", exc)
            delivery.reject(str(exc))
            return
        with self._lock:  # one check with the put, so close_run() refuses whatever got queued
            active = self._active_run
            if active == run:
                self._inbox.put(result)
                return
        reason = f"result for run {run}, but the active run is {active}"
        log.warning("refused result from %s: %s", result.site, reason)
        delivery.reject(reason)

    def _decode(self, delivery: Delivery) -> tuple[int, TaskResult]:
        if delivery.content_type not in (None, names.CONTENT_TYPE):
            raise DecodeError(f"content type {delivery.content_type!r}, expected {names.CONTENT_TYPE}")
        envelope = decode_envelope(delivery.body, max_size=self.transport.options.max_body_size)
        if envelope.kind != "result":
            raise DecodeError(f"envelope.kind: expected 'result', got {envelope.kind!r}")
        site, round_ = envelope.fields.get("site"), envelope.fields.get("round")
        if not isinstance(site, str) or not isinstance(round_, int) or envelope.shareable is None:
            raise DecodeError("a result needs fields.site (str), fields.round (int) and a shareable")
        if self.enforce_site_users and delivery.user_id != site:
            raise DecodeError(f"result claims to be from {site!r} but was sent by user {delivery.user_id!r}")

        def settle(reason: str | None) -> None:
            if reason is None:
                delivery.ack()
            else:
                delivery.reject(reason)

        task_result = TaskResult(
            site=site, task_id=envelope.shareable.task_id, round=round_, shareable=envelope.shareable, settle=settle
        )
        return envelope.run, task_result
