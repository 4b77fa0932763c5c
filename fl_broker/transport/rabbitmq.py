"""The RabbitMQ transport: the only module of fl-broker that imports pika.

Threading model: one I/O thread owns a pika BlockingConnection and one channel in confirm mode, and is the
only thread that calls pika. Other threads hand it operations (publish, ack, reject, consume, cancel)
through a queue and wait for the result. Between operations it keeps calling `process_data_events`, so
heartbeats are answered however long a handler works. Each subscription calls its handler on its own
dispatch thread, one delivery at a time.

Every new channel (first connect, reconnect, or a channel the broker closed because of a bad operation)
starts a new *generation*. Deliveries remember their generation; settling one from an older generation is a
no-op, because its tag means nothing on the new channel and the broker redelivers it anyway.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import re
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from queue import SimpleQueue
from typing import Any

import pika
import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils import io_services_utils

from fl_broker import names
from fl_broker.errors import (
    AuthenticationFailed,
    ConnectionLost,
    MessageTooLarge,
    PublishFailed,
    TransportError,
)
from fl_broker.names import Topology
from fl_broker.transport import chunking
from fl_broker.transport.base import Delivery, Handler, Subscription, Transport, TransportOptions

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.05  # longest the I/O thread sleeps in pika before looking at queued operations
_SOCKET_READ_BYTES = 256 * 1024
_FRAME_MAX = 131072  # pika's ceiling
_MAX_PREFETCH = 65535  # AMQP's prefetch_count is a 16-bit field
_CONNECTION_ERRORS = (pe.AMQPConnectionError, ConnectionError, OSError)
_AUTH_CODES = (403, 530)  # ACCESS_REFUSED (login), NOT_ALLOWED (vhost)


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


def safe_url(url: str) -> str:
    """`url` with any password replaced by ***, fit for logs."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


class _Stopped(Exception):
    """The I/O thread is shutting down or gave up; pending operations fail with the carried error."""


class _Op:
    """One operation for the I/O thread, and the caller's handle on its outcome."""

    def __init__(self, fn: Callable[[BlockingChannel], Any], *, retry: bool, error: type[TransportError]) -> None:
        self.fn = fn
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


@dataclass
class _Incoming:
    """A raw delivery as pika handed it to the I/O thread."""

    generation: int
    tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    properties: pika.BasicProperties
    body: bytes | memoryview | None

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.properties.headers or {})


class RabbitMQTransport(Transport):
    """A Transport over one RabbitMQ connection (amqp:// or amqps:// URL). Connects in the constructor."""

    def __init__(
        self,
        url: str,
        *,
        options: TransportOptions | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.options = options or TransportOptions()
        self._params = _parameters(url, self.options, ssl_context)
        self.user = str(self._params.credentials.username)
        self._url = safe_url(url)
        self._inbox: SimpleQueue[_Op] = SimpleQueue()
        self._pending: deque[_Op] = deque()
        self._conn: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self.generation = 0
        self._topologies: list[Topology] = []
        self._reply_queue: str | None = None
        self._private_queues: dict[str, tuple[tuple[str, str], ...]] = {}
        self._subs: list[_Subscription] = []
        self._stopping = threading.Event()
        self._fatal: TransportError | None = None
        self._closed = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fl-amqp-io-{self.user}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._fatal is not None:
            self._thread.join()
            raise self._fatal

    # -- public API ------------------------------------------------------------------------------------
    def declare(self, topology: Topology) -> None:
        """Declare durable exchanges, queues and bindings; they are declared again after a reconnect."""
        if self.options.predeclared:
            return
        self._call(lambda ch: _declare(ch, topology), retry=True, what="declare")
        if topology not in self._topologies:
            self._topologies.append(topology)

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        headers: dict[str, Any] | None = None,
        expiration: float | None = None,
    ) -> None:
        """Publish persistently (chunked above options.chunk_size) and wait for the broker's confirms."""
        if len(body) > self.options.max_body_size:
            raise MessageTooLarge(f"body of {len(body)} bytes is over max_body_size={self.options.max_body_size}")
        props = pika.BasicProperties(
            content_type=names.CONTENT_TYPE,
            delivery_mode=2,
            message_id=message_id or uuid.uuid4().hex,
            correlation_id=correlation_id,
            reply_to=reply_to,
            timestamp=int(time.time()),
            headers=dict(headers or {}),
            user_id=self.user,
            expiration=str(max(0, int(expiration * 1000))) if expiration is not None else None,
        )
        self._call(
            lambda ch: self._send(ch, exchange, routing_key, body, props),
            retry=True,
            what=f"publish to {exchange!r}/{routing_key!r}",
            error=PublishFailed,
        )

    def consume(self, queue: str, handler: Handler) -> Subscription:
        """Deliver the messages of `queue` to `handler`, one at a time, on a dedicated thread."""
        sub = _Subscription(self, queue, handler)
        self._subs.append(sub)
        try:
            self._call(sub.start_consuming, retry=True, what=f"consume {queue!r}")
        except BaseException:
            with contextlib.suppress(ValueError):
                self._subs.remove(sub)
            sub.stop_thread()
            raise
        return sub

    def reply_queue(self) -> str:
        """A private exclusive queue for replies, declared again under the same name after a reconnect."""
        if self._reply_queue is None:
            self._reply_queue = self.private_queue(())
        return self._reply_queue

    def private_queue(self, bindings: tuple[tuple[str, str], ...]) -> str:
        """An exclusive queue bound as given, declared again under the same name after a reconnect."""
        name = f"fl.private.{self.user}.{uuid.uuid4().hex[:12]}"
        self._call(lambda ch: _declare_private_queue(ch, name, bindings), retry=True, what="private queue")
        self._private_queues[name] = bindings
        return name

    def close(self) -> None:
        """Cancel subscriptions (waiting for running handlers), close the connection, join the I/O thread."""
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs):
            sub.cancel()
        self._stopping.set()
        self._wake()
        self._thread.join(timeout=30)
        log.info("closed RabbitMQ transport %s", self._url)

    # -- plumbing used by subscriptions ----------------------------------------------------------------
    def _call(
        self,
        fn: Callable[[BlockingChannel], Any],
        *,
        retry: bool,
        what: str,
        error: type[TransportError] = TransportError,
    ) -> Any:
        """Run `fn(channel)` on the I/O thread and return its result (or raise its error)."""
        if self._fatal is not None:
            raise self._fatal
        if self._closed and not self._thread.is_alive():
            raise ConnectionLost(f"{what}: transport is closed")
        if threading.current_thread() is self._thread:
            return fn(self._channel)
        op = _Op(fn, retry=retry, error=error)
        self._inbox.put(op)
        self._wake()
        return op.wait(self.options.publish_timeout, self._thread.is_alive)

    def _wake(self) -> None:
        conn = self._conn
        if conn is not None:
            try:
                conn.add_callback_threadsafe(lambda: None)
            except Exception:  # closed or closing: the loop polls anyway
                pass

    def _send(
        self,
        ch: BlockingChannel,
        exchange: str,
        key: str,
        body: bytes | bytearray | memoryview,
        props: pika.BasicProperties,
    ) -> None:
        """Publish on the I/O thread: one message, or ordered chunks, each confirmed."""
        # pika only takes `bytes` bodies, so views and bytearrays are copied (one chunk at a time).
        if len(body) <= self.options.chunk_size:
            ch.basic_publish(exchange, key, _as_bytes(body), props, mandatory=True)
            return
        base_headers = dict(props.headers or {})
        for chunk_headers, view in chunking.split(body, self.options.chunk_size):
            chunk_props = _copy_props(props, headers={**base_headers, **chunk_headers})
            ch.basic_publish(exchange, key, _as_bytes(view), chunk_props, mandatory=True)

    def _dead_letter(
        self,
        ch: BlockingChannel,
        queue: str,
        items: list[tuple[int, pika.BasicProperties, bytes | bytearray | memoryview]],
        reason: str,
    ) -> None:
        """Copy each (tag, properties, body) to fl.dlx with the reason, then ack the originals."""
        for tag, props, body in items:
            # Chunk headers of a malformed stream are kept under another name, so that a consumer of the
            # dead-letter queue does not try (and fail) to reassemble them again.
            headers = {
                (f"x-fl-original-{k[5:]}" if k in chunking.CHUNK_HEADERS else k): v
                for k, v in (props.headers or {}).items()
            }
            headers[names.REJECT_REASON_HEADER] = reason
            headers[names.REJECT_QUEUE_HEADER] = queue
            if props.user_id and props.user_id != self.user:
                headers["x-fl-original-user"] = props.user_id
            copy = _copy_props(props, headers=headers, user_id=self.user)
            try:
                self._send(ch, names.DEAD_LETTER_EXCHANGE, queue, body, copy)
            except pe.UnroutableError:
                # No dead-letter queue bound: let the broker dead-letter it via the queue's own DLX.
                log.warning("no queue bound to %s; nacking message from %s instead", names.DEAD_LETTER_EXCHANGE, queue)
                ch.basic_nack(tag, requeue=False)
                continue
            ch.basic_ack(tag)

    # -- the I/O thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not (self._stopping.is_set() and self._inbox.empty() and not self._pending):
                if self._conn is None:
                    self._connect_with_backoff()
                try:
                    self._run_ops()
                    assert self._conn is not None
                    self._conn.process_data_events(time_limit=_POLL_SECONDS)
                except pe.ChannelClosedByBroker as exc:
                    log.warning("broker closed the channel: %s; reopening it", exc)
                    self._reopen_channel()
                except _CONNECTION_ERRORS as exc:
                    self._lost(exc)
        except _Stopped:
            pass
        except BaseException as exc:  # a bug: fail loudly rather than hang callers
            log.exception("RabbitMQ I/O thread crashed")
            self._fatal = self._fatal or ConnectionLost(f"I/O thread crashed: {exc!r}")
        finally:
            self._shutdown()

    def _run_ops(self) -> None:
        while not self._inbox.empty():
            self._pending.append(self._inbox.get())
        while self._pending:
            op = self._pending.popleft()
            if not op.take():
                continue
            try:
                result = op.fn(self._channel)
            except _CONNECTION_ERRORS:
                if op.requeue():
                    self._pending.appendleft(op)
                else:
                    op.finish(error=ConnectionLost("connection lost during the operation"))
                raise
            except pe.ChannelClosedByBroker as exc:
                op.finish(error=_translate_channel_error(exc, op.error_type))
                log.warning("broker closed the channel: %s; reopening it", exc)
                self._reopen_channel()
            except BaseException as exc:
                op.finish(error=_translate(exc))
            else:
                op.finish(result)

    def _connect_with_backoff(self) -> None:
        attempts = 0
        while True:
            if self._stopping.is_set():
                raise _Stopped
            try:
                self._connect_once()
                self._ready.set()
                return
            except AuthenticationFailed as exc:
                self._give_up(exc)
            except (*_CONNECTION_ERRORS, pe.AMQPError) as exc:
                attempts += 1
                limit = self.options.connect_attempts
                if limit and attempts >= limit:
                    self._give_up(ConnectionLost(f"cannot connect to {self._url} after {attempts} attempts: {exc}"))
                delay = min(self.options.backoff_max, self.options.backoff_initial * 2 ** (attempts - 1))
                delay *= random.uniform(0.5, 1.0)
                log.warning("cannot connect to %s (%s); retrying in %.1f s", self._url, exc, delay)
                self._stopping.wait(delay)

    def _give_up(self, error: TransportError) -> None:
        log.error("giving up on %s: %s", self._url, error)
        self._fatal = error
        raise _Stopped

    def _connect_once(self) -> None:
        try:
            conn = pika.BlockingConnection(self._params)
        except pe.ConnectionClosedByBroker as exc:
            if exc.reply_code in _AUTH_CODES:
                raise AuthenticationFailed(f"{self._url}: {exc.reply_text}") from exc
            raise
        except (pe.ProbableAuthenticationError, pe.AuthenticationError, pe.ProbableAccessDeniedError) as exc:
            raise AuthenticationFailed(f"{self._url}: {exc}") from exc
        self._conn = conn
        try:
            self._open_channel()
        except BaseException:
            self._conn = None
            _close_quietly(conn)
            raise
        log.info("connected to %s (generation %d)", self._url, self.generation)

    def _open_channel(self) -> None:
        """Open the confirm-mode channel, redeclare what was declared and resume every subscription."""
        assert self._conn is not None
        channel = self._conn.channel()
        channel.confirm_delivery()
        self._channel = channel
        self.generation += 1
        for topology in list(self._topologies):
            try:
                _declare(channel, topology)
            except pe.ChannelClosedByBroker as exc:  # e.g. someone redeclared a queue differently
                log.error("cannot declare %s again (%s); no longer redeclaring it", topology, exc)
                self._topologies.remove(topology)
                return self._open_channel()
        for name, bindings in list(self._private_queues.items()):
            _declare_private_queue(channel, name, bindings)
        for sub in list(self._subs):
            if sub.cancelled:
                continue
            try:
                sub.start_consuming(channel)
            except pe.ChannelClosedByBroker as exc:  # e.g. the queue was deleted meanwhile
                log.error("cannot resume consuming %s (%s); subscription ended", sub.queue, exc)
                with contextlib.suppress(ValueError):
                    self._subs.remove(sub)
                sub.abandon()
                return self._open_channel()
        return None

    def _reopen_channel(self) -> None:
        try:
            self._open_channel()
        except pe.ChannelClosedByBroker as exc:
            log.error("cannot restore the channel (%s); reconnecting", exc)
            self._lost(exc)

    def _lost(self, exc: BaseException) -> None:
        log.warning("lost connection to %s: %r; reconnecting", self._url, exc)
        conn, self._conn, self._channel = self._conn, None, None
        self.generation += 1
        if conn is not None:
            _close_quietly(conn)

    def _shutdown(self) -> None:
        error = self._fatal or ConnectionLost("transport closed")
        for op in [*self._pending, *_drain(self._inbox)]:
            if op.take():
                op.finish(error=error)
        conn, self._conn, self._channel = self._conn, None, None
        self.generation += 1
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception as exc:
                log.debug("error while closing the connection: %r", exc)
        self._ready.set()


class _Subscription(Subscription):
    """A consumer: pika delivers into an inbox (I/O thread); a dispatch thread reassembles and handles."""

    def __init__(self, transport: RabbitMQTransport, queue: str, handler: Handler) -> None:
        self.transport = transport
        self.queue = queue
        self.handler = handler
        self.cancelled = False
        self._tag: tuple[int, str] | None = None  # (generation, consumer tag)
        self._inbox: SimpleQueue[_Incoming | None] = SimpleQueue()
        self._reassembler = chunking.Reassembler(transport.options.max_body_size, transport.options.max_partial_streams)
        self._held: dict[str, list[tuple[_Incoming, int]]] = {}  # stream id -> (chunk, its size)
        # Deliveries handed to the handler and not settled yet, in delivery order: cancel() requeues them.
        self._outstanding: dict[int, tuple[int, list[int], Delivery]] = {}
        self._outstanding_lock = threading.Lock()
        self._generation = -1
        self._thread = threading.Thread(target=self._dispatch_loop, name=f"fl-consume-{queue}", daemon=True)
        self._thread.start()

    def start_consuming(self, ch: BlockingChannel) -> None:
        """(I/O thread) Register the consumer on the current channel."""
        generation = self.transport.generation
        if self._tag is not None and self._tag[0] == generation:
            return  # already consuming on this channel (a retried op after a reconnect)
        ch.basic_qos(prefetch_count=min(self.transport.options.effective_prefetch(), _MAX_PREFETCH))

        def on_message(_ch: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
            item = _Incoming(
                generation, method.delivery_tag, method.redelivered, method.exchange, method.routing_key, props, body
            )
            self._inbox.put(item)

        tag = ch.basic_consume(self.queue, on_message, auto_ack=False)
        self._tag = (generation, tag)

    def cancel(self) -> None:
        """Stop consuming; wait for a running handler; undelivered messages go back to the queue."""
        if self.cancelled:
            return
        self.cancelled = True
        if self.transport._conn is not None:  # while disconnected there is no consumer to cancel
            try:
                self.transport._call(self._cancel_on, retry=False, what=f"cancel {self.queue!r}")
            except TransportError as exc:
                log.debug("cancel of %s: %s", self.queue, exc)
        self.stop_thread()
        self._requeue_outstanding()
        with contextlib.suppress(ValueError):
            self.transport._subs.remove(self)

    def _forget_older_than(self, generation: int) -> None:
        """Stop tracking deliveries of replaced channels: the broker has requeued them already."""
        with self._outstanding_lock:
            for key in [k for k, entry in self._outstanding.items() if entry[0] < generation]:
                del self._outstanding[key]

    def _requeue_outstanding(self) -> None:
        """Give back deliveries the handler kept without settling; settling them later is a no-op."""
        by_generation: dict[int, list[int]] = {}
        with self._outstanding_lock:
            for key, (generation, tags, delivery) in list(self._outstanding.items()):
                with delivery._lock:
                    if delivery._settled:
                        continue  # being settled right now by another thread: _settle() finishes it
                    delivery._settled = True
                del self._outstanding[key]
                by_generation.setdefault(generation, []).extend(tags)
        for generation, tags in by_generation.items():
            self._settle_raw(generation, functools.partial(_nack_all, tags=tags))

    def abandon(self) -> None:
        """(I/O thread) End a subscription the broker will not resume; never blocks."""
        self.cancelled = True
        self._inbox.put(None)

    def stop_thread(self) -> None:
        self.cancelled = True
        self._inbox.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _cancel_on(self, ch: BlockingChannel) -> None:
        if self._tag is not None and self._tag[0] == self.transport.generation:
            ch.basic_cancel(self._tag[1])  # pika nacks (requeues) what it buffered but did not dispatch

    # -- dispatch thread -------------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                break
            if item.generation != self._generation:  # new channel: partial streams are being redelivered
                self._generation = item.generation
                self._reassembler.clear()
                self._held.clear()
                self._forget_older_than(item.generation)
            if self.cancelled:
                self._requeue([item])
                continue
            delivery = (
                self._take_chunk(item) if chunking.is_chunk(item.properties.headers) else self._wrap([item], item.body)
            )
            if delivery is not None:
                self._handle(delivery)
        self._requeue([chunk for held in self._held.values() for chunk, _ in held])
        self._held.clear()

    def _take_chunk(self, item: _Incoming) -> Delivery | None:
        headers = item.headers
        assert item.body is not None
        if headers.get(chunking.INDEX_HEADER) == 0:
            self._drop_superseded(item)
        try:
            body = self._reassembler.add(headers, item.body)
        except chunking.ChunkError as exc:
            self._reject_stream(item, exc)
            return None
        stream_id = str(headers[chunking.STREAM_HEADER])
        size = len(item.body)
        item.body = None  # the bytes now live in the stream's buffer
        self._held.setdefault(stream_id, []).append((item, size))
        if body is None:
            return None
        return self._wrap([chunk for chunk, _ in self._held.pop(stream_id)], body)

    def _drop_superseded(self, item: _Incoming) -> None:
        """A publisher whose connection broke mid-stream sends the whole message again as a new stream with
        the same message id; the partial old stream would otherwise hold its chunks (and prefetch) forever."""
        message_id = item.properties.message_id
        for stream_id, held in list(self._held.items()):
            if message_id and held[0][0].properties.message_id == message_id:
                log.info("chunk stream %s of message %s superseded by a resend; dropping it", stream_id, message_id)
                del self._held[stream_id]
                self._reassembler.discard(stream_id)
                tags = [chunk.tag for chunk, _ in held]
                self._settle_raw(item.generation, functools.partial(_ack_all, tags=tags))

    def _reject_stream(self, item: _Incoming, exc: chunking.ChunkError) -> None:
        """Dead-letter a malformed chunk and the held chunks of its stream; the handler never sees them."""
        log.warning("dead-lettering malformed chunk stream from %s: %s", self.queue, exc)
        held = self._held.pop(exc.stream or "", [])
        partial = exc.partial if exc.partial is not None else memoryview(b"")
        items: list[tuple[int, pika.BasicProperties, bytes | bytearray | memoryview]] = []
        offset = 0
        for chunk, size in held:
            items.append((chunk.tag, chunk.properties, partial[offset : offset + size]))
            offset += size
        items.append((item.tag, item.properties, item.body or b""))
        self._settle_raw(item.generation, lambda ch: self.transport._dead_letter(ch, self.queue, items, str(exc)))

    def _wrap(self, items: list[_Incoming], body: bytes | bytearray | memoryview | None) -> Delivery:
        first = items[0]
        props = first.properties
        headers = {k: v for k, v in first.headers.items() if k not in chunking.CHUNK_HEADERS}
        delivery = Delivery(
            body=body if isinstance(body, (bytes, bytearray)) else bytes(body or b""),
            exchange=first.exchange,
            routing_key=first.routing_key,
            content_type=props.content_type,
            message_id=props.message_id,
            correlation_id=props.correlation_id,
            reply_to=props.reply_to,
            user_id=props.user_id,
            timestamp=props.timestamp,
            headers=headers,
            redelivered=any(item.redelivered for item in items),
        )
        tags = [item.tag for item in items]
        delivery._settle = lambda action, reason: self._settle(first.generation, tags, delivery, action, reason)
        with self._outstanding_lock:
            self._outstanding[id(delivery)] = (first.generation, tags, delivery)
        return delivery

    def _settle(self, generation: int, tags: list[int], delivery: Delivery, action: str, reason: str | None) -> None:
        with self._outstanding_lock:
            if self._outstanding.pop(id(delivery), None) is None:
                return  # already requeued by cancel()
        if action == "ack":
            self._settle_raw(generation, functools.partial(_ack_all, tags=tags))
            return
        props = pika.BasicProperties(
            content_type=delivery.content_type,
            delivery_mode=2,
            message_id=delivery.message_id,
            correlation_id=delivery.correlation_id,
            reply_to=delivery.reply_to,
            timestamp=delivery.timestamp,
            headers=dict(delivery.headers),
            user_id=delivery.user_id,
        )

        def reject(ch: BlockingChannel) -> None:
            # One copy of the whole body (chunked again if large), then ack every chunk of the original.
            self.transport._dead_letter(ch, self.queue, [(tags[-1], props, delivery.body)], reason or "rejected")
            for tag in tags[:-1]:
                ch.basic_ack(tag)

        self._settle_raw(generation, reject)

    def _settle_raw(self, generation: int, fn: Callable[[BlockingChannel], Any]) -> None:
        """Run a settle operation, unless the channel its tags belong to is gone (then it is a no-op)."""

        def guarded(ch: BlockingChannel) -> None:
            if generation != self.transport.generation:
                log.debug("not settling a delivery from an old channel; the broker redelivers it")
                return
            fn(ch)

        try:
            self.transport._call(guarded, retry=False, what="settle")
        except TransportError as exc:
            log.warning("could not settle a delivery from %s: %s (it will be redelivered)", self.queue, exc)

    def _requeue(self, items: list[_Incoming]) -> None:
        by_generation: dict[int, list[int]] = {}
        for item in items:
            by_generation.setdefault(item.generation, []).append(item.tag)
        for generation, tags in by_generation.items():
            self._settle_raw(generation, functools.partial(_nack_all, tags=tags))

    def _handle(self, delivery: Delivery) -> None:
        try:
            self.handler(delivery)
        except Exception as exc:
            log.exception("handler for %s failed; rejecting the message", self.queue)
            delivery.reject(f"handler error: {exc!r}")


# -- helpers -------------------------------------------------------------------------------------------
def _declare(ch: BlockingChannel, topology: Topology) -> None:
    for exchange in topology.exchanges:
        ch.exchange_declare(exchange.name, exchange.type, durable=True)
    for queue in topology.queues:
        ch.queue_declare(queue.name, durable=True, arguments=dict(queue.arguments) or None)
        for exchange_name, key in queue.bindings:
            ch.queue_bind(queue.name, exchange_name, routing_key=key)


def _declare_private_queue(ch: BlockingChannel, name: str, bindings: tuple[tuple[str, str], ...]) -> None:
    ch.queue_declare(name, durable=False, exclusive=True, auto_delete=True)
    for exchange_name, key in bindings:
        ch.queue_bind(name, exchange_name, routing_key=key)


def _copy_props(props: pika.BasicProperties, **changes: Any) -> pika.BasicProperties:
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
        )
    }
    fields.update(changes)
    return pika.BasicProperties(**fields)


def _parameters(url: str, options: TransportOptions, ssl_context: ssl.SSLContext | None) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.heartbeat = options.heartbeat
    params.blocked_connection_timeout = max(options.publish_timeout, 60.0)
    params.connection_attempts = 1
    params.socket_timeout = 10
    params.frame_max = _FRAME_MAX
    if ssl_context is not None:
        params.ssl_options = pika.SSLOptions(ssl_context, server_hostname=params.host)
    return params


def _translate_channel_error(exc: pe.ChannelClosedByBroker, error: type[TransportError]) -> TransportError:
    if exc.reply_code == 403:
        log.error("access refused by the broker: %s", exc.reply_text)
    translated = error(f"broker refused the operation: {exc.reply_code} {exc.reply_text}")
    translated.__cause__ = exc
    return translated


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, pe.UnroutableError):
        return PublishFailed(f"unroutable (no queue bound): {exc}")
    if isinstance(exc, pe.NackError):
        return PublishFailed(f"broker nacked the message: {exc}")
    if isinstance(exc, pe.AMQPError):
        return TransportError(f"{type(exc).__name__}: {exc}")
    return exc


def _close_quietly(conn: pika.BlockingConnection) -> None:
    if conn.is_open:
        try:
            conn.close()
        except Exception as exc:
            log.debug("error while closing a connection: %r", exc)


def _as_bytes(body: bytes | bytearray | memoryview) -> bytes:
    return body if isinstance(body, bytes) else bytes(body)


def _ack_all(ch: BlockingChannel, *, tags: list[int]) -> None:
    for tag in tags:
        ch.basic_ack(tag)


def _nack_all(ch: BlockingChannel, *, tags: list[int]) -> None:
    for tag in tags:
        ch.basic_nack(tag, requeue=True)


def _drain(inbox: SimpleQueue[_Op]) -> list[_Op]:
    ops = []
    while not inbox.empty():
        ops.append(inbox.get())
    return ops
