"""pika-level helpers of the RabbitMQ transport: operations handed to the I/O thread, message properties,
declares, and the translation of pika's errors into fl-broker's."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pika
import pika.exceptions as pe
from pika.adapters import blocking_connection
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils import io_services_utils

from fl_broker.errors import ConnectionLost, PublishFailed, QueueTypeMismatch, TransportError, migration
from fl_broker.transport.rabbitmq import frames
from fl_broker.transport.urls import safe_url as safe_url  # re-exported: fl_broker.transport.rabbitmq offers it
from fl_broker.wire import names
from fl_broker.wire.names import Topology, with_queue_type

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05  # longest the I/O thread sleeps in pika before looking at queued operations
# 256 KiB, not 1 MiB: 10M x 8 rounds took 1.33-1.40 s with 1 MiB reads and 1.13-1.22 s with 256 KiB (each read
# of 1 MiB is a fresh mapping to fault in), for 1-2 MiB more at a worker's peak (91 -> 93 MiB at 10M x 32).
_SOCKET_READ_BYTES = 256 * 1024
MAX_PREFETCH = 65535  # AMQP's prefetch_count is a 16-bit field
CONNECTION_ERRORS = (pe.AMQPConnectionError, ConnectionError, OSError)
AUTH_CODES = (403, 530)  # ACCESS_REFUSED (login), NOT_ALLOWED (vhost)


def raise_socket_read_size(size: int = _SOCKET_READ_BYTES) -> bool:
    """Make pika read the socket `size` bytes at a time instead of 4 KiB (about 2x the delivery rate).

    `_MAX_RECV_BYTES` is private to pika; tests/transport/test_rabbitmq.py fails if pika drops it."""
    cls = getattr(io_services_utils, "_AsyncTransportBase", None)
    if cls is None or not hasattr(cls, "_MAX_RECV_BYTES"):
        log.debug("pika has no _AsyncTransportBase._MAX_RECV_BYTES; keeping its socket read size")
        return False
    cls._MAX_RECV_BYTES = max(int(cls._MAX_RECV_BYTES), size)
    return True


raise_socket_read_size()
frames.install()


class Stopped(Exception):
    """The I/O thread is shutting down or gave up; pending operations fail with the carried error."""


class Op:
    """One operation for the I/O thread, and the caller's handle on its outcome."""

    def __init__(
        self,
        fn: Callable[[BlockingChannel], Any],
        *,
        retry: bool,
        error: type[TransportError],
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.fn = fn
        self.on_error = on_error  # for an op nobody waits for (posted): told of its error instead
        self.error_type = error  # what a channel-level refusal becomes
        self.retry = retry  # run again on the next connection if the connection drops during it
        self.state = "pending"  # pending -> running -> done, or pending -> abandoned
        self.result: Any = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()

    def take(self) -> bool:
        with self._lock:
            if self.state != "pending":
                return False
            self.state = "running"
            return True

    def requeue(self) -> bool:
        with self._lock:
            if self.state != "running" or not self.retry:
                return False
            self.state = "pending"
            return True

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        with self._lock:
            self.state = "done"
        self.result, self.error = result, error
        self._done.set()
        if error is not None and self.on_error is not None:
            self.on_error(error)

    def wait(self, timeout: float, io_alive: Callable[[], bool]) -> Any:
        """Wait for the outcome; give up (ConnectionLost) if the op was not started within `timeout`, or
        at once if the I/O thread has ended."""
        deadline = time.monotonic() + timeout
        while not self._done.wait(max(0.0, min(0.5, deadline - time.monotonic()))):
            if not io_alive() and not self._done.is_set():
                raise ConnectionLost("transport is closed")
            if time.monotonic() < deadline:
                continue
            with self._lock:
                if self.state == "pending":
                    self.state = "abandoned"
                    raise ConnectionLost(f"broker unreachable for {timeout:.0f} s; operation abandoned")
        if self.error is not None:
            raise self.error
        return self.result


def posted(fn: Callable[[BlockingChannel], Any], what: str) -> Op:
    """An op that nobody waits for, whose failure is logged: for settling deliveries (the caller could not act
    on a failure: a delivery left unsettled is redelivered) and unconfirmed publishes. Waiting cost the
    calling thread a hop to the I/O thread and back, ~0.5-3 ms measured here (the server's workflow thread
    waited so for every result it acked)."""

    def failed(exc: BaseException) -> None:
        log.warning("could not %s: %s", what, exc)

    return Op(fn, retry=False, error=TransportError, on_error=failed)


_TYPE_MISMATCH = re.compile(r"inequivalent arg 'x-queue-type' for queue '([^']*)'.*current is (?:the value )?'?(\w+)")


def declare(ch: BlockingChannel, topology: Topology, queue_type: str, *, adopt: bool = False) -> None:
    """Declare `topology` with every durable queue of type `queue_type`; a queue that exists as another
    type raises QueueTypeMismatch (the broker's 406 closes the channel, as for any inequivalent argument),
    or with `adopt` (--queue-type auto) keeps its type, with a warning naming it and how to migrate."""
    typed = with_queue_type(topology, queue_type)
    try:
        _declare(ch, adopt_existing_types(ch.connection, typed) if adopt else typed)
    except pe.ChannelClosedByBroker as exc:
        current = _mismatched_type(exc)
        if current is None:
            raise
        raise QueueTypeMismatch(current[0], current[1], queue_type) from exc


def _mismatched_type(exc: pe.ChannelClosedByBroker) -> tuple[str, str] | None:
    """(queue, its current type) if the broker refused a declare because the queue has another type."""
    mismatch = _TYPE_MISMATCH.search(exc.reply_text or "") if exc.reply_code == 406 else None
    if mismatch is None:
        return None
    return mismatch.group(1), names.CLASSIC if mismatch.group(2) == "none" else mismatch.group(2)


def adopt_existing_types(conn: pika.BlockingConnection, topology: Topology) -> Topology:
    """`topology` with each queue that exists as another type than it says declared as that type instead.
    Each queue is tried on a throwaway channel (a mismatch closes the channel it was asked on); the try
    creates a queue that does not exist yet, with the type asked for."""
    queues = []
    for queue in topology.queues:
        wanted = queue.arguments[names.QUEUE_TYPE_ARGUMENT]
        probe = conn.channel()
        try:
            probe.queue_declare(queue.name, durable=True, arguments=dict(queue.arguments))
        except pe.ChannelClosedByBroker as exc:
            current = _mismatched_type(exc)  # another refusal: the declare proper reports it
            if current is not None:
                log.warning(
                    "queue %r exists as a %s queue: keeping it so (new queues are %s here); to change it, %s",
                    queue.name, current[1], wanted, migration(queue.name, wanted),
                )  # fmt: skip
                queue = replace(queue, arguments={**queue.arguments, names.QUEUE_TYPE_ARGUMENT: current[1]})
        finally:
            if probe.is_open:
                probe.close()
        queues.append(queue)
    return replace(topology, queues=tuple(queues))


def _declare(ch: BlockingChannel, topology: Topology) -> None:
    for exchange in topology.exchanges:
        ch.exchange_declare(exchange.name, exchange.type, durable=True)
    for queue in topology.queues:
        ch.queue_declare(queue.name, durable=True, arguments=dict(queue.arguments) or None)
        for exchange_name, key in queue.bindings:
            ch.queue_bind(queue.name, exchange_name, routing_key=key)


def exchange_exists(ch: BlockingChannel, name: str) -> bool:
    """Whether exchange `name` exists. A passive declare needs no permission, but a missing exchange closes
    the channel it was asked on (404), so it is asked on a channel of its own."""
    probe = ch.connection.channel()
    try:
        probe.exchange_declare(name, passive=True)
    except pe.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return False
        raise
    probe.close()
    return True


def consume_on_arrival(ch: BlockingChannel, queue: str, on_message: Callable[..., None]) -> str:
    """`ch.basic_consume(queue, on_message)`, except that each delivery reaches `on_message` as soon as pika
    has its last frame (during any poll of the I/O thread, even one waiting for a publisher's confirm), not
    when the blocking channel next dispatches its events: a model-sized task's chunks would wait there as
    frames while the I/O thread waits, beside what was copied of them already. `on_message` must not call
    pika. A broker's cancel still goes through the channel's own dispatch (its cancel callbacks). Uses
    pika's consumer event sink (private); pika's plain dispatch if this pika lacks it."""
    deliver = getattr(blocking_connection, "_ConsumerDeliveryEvt", None)
    consume = getattr(ch, "_basic_consume_impl", None)
    pend = getattr(ch, "_add_pending_event", None)
    if deliver is None or consume is None or pend is None:
        return str(ch.basic_consume(queue, on_message, auto_ack=False))

    def sink(evt: Any) -> None:
        if isinstance(evt, deliver):
            on_message(ch, evt.method, evt.properties, evt.body)
        else:
            pend(evt)

    return str(consume(queue=queue, auto_ack=False, exclusive=False, consumer_tag=None, alternate_event_sink=sink))


def consumer_count(conn: pika.BlockingConnection | None, queue: str) -> int:
    """Consumers of `queue` (0 if it does not exist), asked on a throwaway channel."""
    if conn is None:
        raise ConnectionLost("not connected")
    channel = conn.channel()
    try:
        return int(channel.queue_declare(queue, passive=True).method.consumer_count)
    except pe.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:  # NOT_FOUND: nobody ever declared it
            return 0
        raise translate_channel_error(exc, TransportError) from exc
    finally:
        if channel.is_open:
            channel.close()


def message_properties(
    user: str,
    app_id: str,
    *,
    message_id: str,
    headers: dict[str, Any],
    expiration: float | None,
    persistent: bool = True,
    **ids: str | None,
) -> pika.BasicProperties:
    """The properties of a message this transport publishes: persistent unless told otherwise, stamped with
    the login (the broker checks user_id against it) and the time, expiring after `expiration` seconds if
    given; `ids` are the correlation_id and reply_to."""
    return pika.BasicProperties(
        content_type=names.CONTENT_TYPE,
        delivery_mode=2 if persistent else 1,
        message_id=message_id,
        timestamp=int(time.time()),
        headers=headers,
        user_id=user,
        app_id=app_id,
        expiration=str(max(0, int(expiration * 1000))) if expiration is not None else None,
        **ids,
    )


def copy_props(props: pika.BasicProperties, **changes: Any) -> pika.BasicProperties:
    fields = {
        name: getattr(props, name)
        for name in (
            "content_type",
            "delivery_mode",
            "message_id",
            "correlation_id",
            "reply_to",
            "timestamp",
            "headers",
            "user_id",
            "app_id",
        )
    }
    fields.update(changes)
    return pika.BasicProperties(**fields)


def translate_channel_error(exc: pe.ChannelClosedByBroker, error: type[TransportError]) -> TransportError:
    if exc.reply_code == 403:
        log.error("access refused by the broker: %s", exc.reply_text)
    translated = error(f"broker refused the operation: {exc.reply_code} {exc.reply_text}")
    translated.__cause__ = exc
    return translated


def translate(exc: BaseException) -> BaseException:
    if isinstance(exc, pe.UnroutableError):
        return PublishFailed(f"unroutable (no queue bound): {exc}")
    if isinstance(exc, pe.NackError):
        return PublishFailed(f"broker nacked the message: {exc}")
    if isinstance(exc, pe.AMQPError):
        return TransportError(f"{type(exc).__name__}: {exc}")
    return exc


def wake(conn: pika.BlockingConnection | None) -> None:
    """Have the I/O thread of `conn` return from its poll (any thread may call it)."""
    if conn is not None:
        try:
            conn.add_callback_threadsafe(lambda: None)
        except Exception:  # closed or closing: the loop polls anyway
            pass


def close_quietly(conn: pika.BlockingConnection) -> None:
    if conn.is_open:
        try:
            conn.close()
        except Exception as exc:
            log.debug("error while closing a connection: %r", exc)


def ack_all(ch: BlockingChannel, *, tags: list[int]) -> None:
    for tag in tags:
        ch.basic_ack(tag)


def nack_all(ch: BlockingChannel, *, tags: list[int]) -> None:
    for tag in tags:
        ch.basic_nack(tag, requeue=True)
