"""The RabbitMQ transport: one connection, owned by one I/O thread.

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
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pika
import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingChannel

from fl_broker.errors import (
    AuthenticationFailed,
    ConnectionLost,
    LockLost,
    MessageTooLarge,
    PublishFailed,
    TransportError,
)
from fl_broker.transport import chunking
from fl_broker.transport.base import Handler, Subscription, Transport, TransportOptions
from fl_broker.transport.rabbitmq import amqp, resume
from fl_broker.transport.rabbitmq.consumer import RabbitSubscription
from fl_broker.transport.rabbitmq.exclusive import ExclusiveQueues
from fl_broker.transport.rabbitmq.nodes import Nodes
from fl_broker.transport.rabbitmq.opqueue import OpQueue
from fl_broker.transport.rabbitmq.publisher import Publisher
from fl_broker.transport.rabbitmq.stopguard import StopGuard
from fl_broker.transport.rabbitmq.topologies import Topologies
from fl_broker.transport.spool import SpoolOptions
from fl_broker.wire import names
from fl_broker.wire.names import Topology

log = logging.getLogger(__name__)


class RabbitMQTransport(Transport):
    """A Transport over one RabbitMQ connection (amqp:// or amqps:// URL). Connects in the constructor.

    `url` may list the nodes of a cluster ("URL1,URL2,..." or a sequence): a connection attempt tries each
    in turn, starting with the one after the node last lost, and backs off only when none answered."""

    interruptions = 0  # counted on the I/O thread: connections lost, consumers the broker cancelled

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        options: TransportOptions | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.options = options or TransportOptions()
        self._nodes = Nodes.of(url, self.options, ssl_context)
        self.user = self._nodes.user
        self._topologies = Topologies(self.options, len(self._nodes.nodes))  # declared again after a reconnect
        self._url = self._nodes.description
        self._ops = OpQueue()
        self._conn: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None  # consuming, settling, declaring
        # Publishing (in confirm mode) has its own channel: a publish the broker refuses (403, 406, 404)
        # closes only that one, so deliveries held on the consuming channel are not redelivered for it.
        self.publisher = Publisher(self)
        self.generation = 0
        self._reply_queue: str | None = None
        self._exclusive = ExclusiveQueues(self.user)  # private queues and held locks, kept across reconnects
        self._subs: list[RabbitSubscription] = []
        self._resumer = resume.Resumer(self)  # subscriptions whose consumer the broker cancelled
        self._stopping = threading.Event()
        self._fatal: TransportError | None = None
        self._failure: str | None = None
        self._closed = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fl-amqp-io-{self.user}", daemon=True)
        self._guard = StopGuard(self._thread, self._stopping, lambda: self._conn)  # armed by begin_close
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
        self.call(self._topologies.declaring(topology), retry=True, what="declare")
        self._topologies.remember(topology)

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: chunking.Body,
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        headers: dict[str, Any] | None = None,
        expiration: float | None = None,
        persistent: bool = True,
        confirm: bool = True,
    ) -> None:
        """Publish (chunked above options.chunk_size) and wait for the broker's confirms (Transport.publish;
        with `confirm=False` and a body that needs no chunks: on a channel without confirms, see Publisher)."""
        if len(body) > self.options.max_body_size:
            raise MessageTooLarge(f"body of {len(body)} bytes is over max_body_size={self.options.max_body_size}")
        props = amqp.message_properties(
            self.user,
            self.options.client_name or self.user,
            persistent=persistent,
            message_id=message_id or uuid.uuid4().hex,
            headers=dict(headers or {}),
            expiration=expiration,
            correlation_id=correlation_id,
            reply_to=reply_to,
        )
        if not confirm and len(body) <= self.options.chunk_size:
            data = chunking.whole(body)  # now: the caller may reuse its buffers once this returns
            send = functools.partial(self.publisher.send_unconfirmed, exchange, routing_key, data, props)
            self.post(lambda ch: send(), what=f"publish to {exchange!r}/{routing_key!r}")
            return
        self.call(
            lambda ch: self.publisher.send(exchange, routing_key, body, props),
            retry=True,
            what=f"publish to {exchange!r}/{routing_key!r}",
            error=PublishFailed,
        )

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Posted operations (unconfirmed publishes, settlements) of this thread inside wake the I/O thread once,
        at the end: a burst of events costs one pass of the I/O thread and one socket write (Transport.batch)."""
        with self._ops.batch(lambda: amqp.wake(self._conn)):
            yield

    def consume(self, queue: str, handler: Handler, *, spool: SpoolOptions | None = None) -> Subscription:
        """Deliver the messages of `queue` to `handler`, one at a time, on a dedicated thread."""
        sub = RabbitSubscription(self, queue, handler, spool)
        self._subs.append(sub)
        try:
            self.call(sub.start_consuming, retry=True, what=f"consume {queue!r}")
        except BaseException:
            self.forget(sub)
            sub.stop_thread()
            raise
        return sub

    def reply_queue(self) -> str:
        """A private exclusive queue for replies, bound to fl.reply under its own name, declared again under
        the same name after a reconnect."""
        if self._reply_queue is None:
            # Declare fl.reply only if it is missing (no server has run yet): declaring needs `configure`
            # on it, which least-privilege logins have not. Predeclared: the operator loaded it.
            exists = self.options.predeclared or self.call(
                lambda ch: amqp.exchange_exists(ch, names.REPLY_EXCHANGE), retry=True, what="find fl.reply"
            )
            if not exists:
                self.declare(names.reply_topology())
            name = self._exclusive.private_name()
            self._declare_private(name, ((names.REPLY_EXCHANGE, name),))
            self._reply_queue = name
        return self._reply_queue

    def private_queue(self, bindings: tuple[tuple[str, str], ...]) -> str:
        """An exclusive queue bound as given, declared again under the same name after a reconnect."""
        name = self._exclusive.private_name()
        self._declare_private(name, bindings)
        return name

    def _declare_private(self, name: str, bindings: tuple[tuple[str, str], ...]) -> None:
        self.call(lambda ch: self._exclusive.declare_private(ch, name, bindings), retry=True, what="private queue")

    def hold_lock(self, name: str, on_lost: Callable[[str], None]) -> bool:
        """Declare the exclusive queue `name` (on the I/O thread, which also records a lock it got, so that a
        reconnect right after it takes the lock again; see exclusive.py)."""
        take = functools.partial(self._exclusive.hold_lock, name=name, on_lost=on_lost)
        return bool(self.call(lambda _ch: take(self._conn), retry=False, what=f"take the lock {name!r}"))

    def consumer_count(self, queue: str) -> int:
        """A passive declare on a channel of its own: a missing queue closes that channel, not the one
        whose deliveries are in flight."""
        return int(self.call(lambda ch: amqp.consumer_count(self._conn, queue), retry=True, what="consumer count"))

    def begin_close(self) -> None:
        """The program is stopping: a broker that leaves the I/O thread waiting `StopGuard.grace` seconds without
        a byte is cut off from now on, ending every wait for it (Transport.begin_close; see stopguard.py)."""
        self._guard.arm()

    def close(self) -> None:
        """Cancel subscriptions (waiting for running handlers), close the connection, join the I/O thread."""
        if self._closed:
            return
        self._closed = True
        self.begin_close()
        for sub in list(self._subs):
            sub.cancel()
        self._stopping.set()
        amqp.wake(self._conn)
        self._guard.join(timeout=30)
        log.info("closed RabbitMQ transport %s", self._url)

    # -- for this package's consumers ------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Whether a connection is open right now."""
        return self._conn is not None

    @property
    def failure(self) -> str | None:
        """Why a consumer of this transport stopped for good, if one did."""
        return self._failure

    def consumer_failed(self, reason: str) -> None:
        """A subscription's dispatch thread died: make it visible to the program (see `failure`)."""
        self._failure = self._failure or reason

    def forget(self, sub: RabbitSubscription) -> None:
        """A subscription ended: do not resume it after a reconnect."""
        with contextlib.suppress(ValueError):
            self._subs.remove(sub)

    def call(
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
        if not self._guard.io_alive():  # closed, or cut off while stopping
            raise ConnectionLost(f"{what}: transport is closed")
        if threading.current_thread() is self._thread:
            return fn(self._channel)
        op = amqp.Op(fn, retry=retry, error=error)
        self._ops.put(op)
        amqp.wake(self._conn)  # even inside a batch(): the caller waits for the result
        return op.wait(self.options.publish_timeout, self._guard.io_alive)

    def post(self, fn: Callable[[BlockingChannel], Any], *, what: str, later: bool = False) -> None:
        """Run `fn(channel)` on the I/O thread after the operations queued before it, without waiting for it
        (see amqp.posted); a failure is logged. On the I/O thread it runs at once, unless `later` (asked from
        inside a poll of pika's, where pika must not be called): then at the loop's next pass."""
        op = amqp.posted(fn, what)
        if self._fatal is not None or not self._guard.io_alive():
            op.finish(error=self._fatal or ConnectionLost("transport is closed"))
        elif threading.current_thread() is self._thread and not later:
            fn(self._channel)
        elif self._ops.put(op):
            amqp.wake(self._conn)

    # -- the I/O thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not (self._stopping.is_set() and self._ops.empty()):
                self._guard.tick()
                if self._conn is None:
                    self._connect_with_backoff()
                try:
                    self._ops.run(self._current_channel, self._reopen_channel)
                    self._resumer.retry_due(self._channel)
                    assert self._conn is not None
                    self._conn.process_data_events(time_limit=amqp.POLL_SECONDS)
                except pe.ChannelClosedByBroker as exc:
                    log.warning("broker closed the channel: %s; reopening it", exc)
                    self._reopen_channel()
                except amqp.CONNECTION_ERRORS as exc:
                    self._lost(exc)
        except amqp.Stopped:
            pass
        except BaseException as exc:  # a bug: fail loudly rather than hang callers
            log.exception("RabbitMQ I/O thread crashed")
            self._fatal = self._fatal or ConnectionLost(f"I/O thread crashed: {exc!r}")
        finally:
            self._shutdown()

    def _current_channel(self) -> BlockingChannel | None:
        """(I/O thread) The consuming channel now: an operation the broker refused may have replaced it."""
        return self._channel

    def _connect_with_backoff(self) -> None:
        try:
            self._nodes.connect(self.options, self._stopping, self._use_connection)
        except (AuthenticationFailed, ConnectionLost) as exc:
            log.error("giving up on %s: %s", self._url, exc)
            self._fatal = exc
            raise amqp.Stopped from exc
        self._ready.set()

    def _use_connection(self, conn: pika.BlockingConnection, host: str) -> None:
        self._conn = conn
        try:
            self._open_channel()
        except BaseException:
            self._conn = None
            amqp.close_quietly(conn)
            raise
        log.info("connected to %s (generation %d)", host, self.generation)

    def _open_channel(self) -> None:
        """Open the confirm-mode channel, redeclare what was declared and resume every subscription."""
        assert self._conn is not None
        channel = self._conn.channel()
        self._channel = channel
        self.publisher.reset()  # opened on first publish
        self.generation += 1
        self._take_locks_again()
        if not self._topologies.declare_again(channel, self.consumer_failed):
            return self._open_channel()
        self._exclusive.declare_private_again(channel)
        channel.add_on_cancel_callback(self._resumer.on_cancel)
        for sub in list(self._subs):
            if sub.cancelled:
                continue
            try:
                self._resumer.resume(channel, sub)  # a missing queue suspends it (see resume.py)
            except pe.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:  # e.g. 403 ACCESS_REFUSED: retrying cannot help
                    log.error("cannot resume consuming %s (%s); subscription ended", sub.queue, exc)
                    self.forget(sub)
                    sub.abandon()
                return self._open_channel()
        return None

    def _take_locks_again(self) -> None:
        """(I/O thread) Take each held lock again before anything else uses this connection; one that another
        connection took while this one was down ends the transport: nothing resumes (fencing)."""
        assert self._conn is not None
        lost = self._exclusive.take_locks_again(self._conn)
        if lost is None:
            return
        reason, on_lost = lost
        self._fatal = LockLost(reason)
        self._failure = self._failure or reason
        on_lost(reason)
        raise amqp.Stopped

    # -- for resume.py ---------------------------------------------------------------------------------
    @property
    def pika_connection(self) -> pika.BlockingConnection | None:
        """(I/O thread) The open connection, for throwaway channels."""
        return self._conn

    def subscriptions(self) -> list[RabbitSubscription]:
        """The subscriptions that are resumed after a reconnect."""
        return list(self._subs)

    def redeclare_queue(self, queue: str) -> bool:
        """(I/O thread) Declare again the topologies this program declared that hold `queue`; whether one was
        declared (never with a predeclared topology: least-privilege logins may not)."""
        if self.options.predeclared or self._conn is None:
            return False
        return self._topologies.redeclare_queue(self._conn, queue)

    def _reopen_channel(self) -> None:
        try:
            self._open_channel()
        except pe.ChannelClosedByBroker as exc:
            log.error("cannot restore the channel (%s); reconnecting", exc)
            self._lost(exc)

    def _lost(self, exc: BaseException) -> None:
        log.warning("lost connection to %s: %r; reconnecting", self._nodes.lost(), exc)
        conn, self._conn, self._channel = self._conn, None, None
        self.publisher.reset()
        self.generation += 1
        self.interruptions += 1
        if conn is not None:
            amqp.close_quietly(conn)

    def _shutdown(self) -> None:
        error = self._fatal or ConnectionLost("transport closed")
        self._ops.fail_all(error)
        conn, self._conn, self._channel = self._conn, None, None
        self.publisher.reset()
        self.generation += 1
        if conn is not None:
            self._guard.tick()  # a close-ok that does not come is cut off too
            amqp.close_quietly(conn)
        self._ready.set()
