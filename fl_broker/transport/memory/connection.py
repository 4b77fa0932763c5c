"""The in-process broker's connections: a Transport per participant and its subscriptions."""

from __future__ import annotations

import copy
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from fl_broker.errors import ConnectionLost, MessageTooLarge, PublishFailed, TransportError
from fl_broker.transport import chunking
from fl_broker.transport.base import Delivery, Handler, Subscription, Transport, TransportOptions
from fl_broker.transport.memory.broker import BrokerQueue, MemoryBroker, QueuedMessage
from fl_broker.transport.spool import SpoolOptions
from fl_broker.wire import names
from fl_broker.wire.names import Topology

log = logging.getLogger(__name__)


class MemorySubscription(Subscription):
    """A consumer of one queue, with its own thread that runs the handler one delivery at a time."""

    def __init__(self, transport: MemoryTransport, queue: BrokerQueue, handler: Handler) -> None:
        self.transport = transport
        self.queue = queue
        self._broker = transport.broker
        self._handler = handler
        self._prefetch = transport.options.effective_prefetch()
        self._wakeup = threading.Condition(self._broker.lock)
        self._inbox: deque[tuple[int, QueuedMessage]] = deque()  # dispatched, not yet given to the handler
        self.unacked: dict[int, QueuedMessage] = {}  # every unsettled delivery, including the inbox
        self._stopping = False
        # The name ends with the connection's login, so a log record can tell whose thread made it (simulate).
        name = f"fl-memory-consumer[{queue.name}]@{transport.user}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # Called with the broker lock held.

    def has_capacity(self) -> bool:
        return not self._stopping and len(self.unacked) < self._prefetch

    def push(self, tag: int, message: QueuedMessage) -> None:
        self.unacked[tag] = message
        self._inbox.append((tag, message))
        self._wakeup.notify()

    def take_unsettled(self) -> list[tuple[int, QueuedMessage]]:
        """Forget every unsettled delivery (their Delivery objects' ack/reject become no-ops)."""
        unsettled = list(self.unacked.items())
        self.unacked.clear()
        self._inbox.clear()
        return unsettled

    def start(self) -> None:
        self._thread.start()

    # Public API.

    def cancel(self) -> None:
        """Stop consuming; waits for a running handler, then requeues what is still unsettled."""
        with self._broker.lock:
            if not self._stopping:
                self._stopping = True
                if self in self.queue.consumers:
                    self.queue.consumers.remove(self)
                self._wakeup.notify()
        if threading.current_thread() is self._thread:
            return  # cancelled by its own handler: the thread ends after it, and close() joins it
        self._thread.join()
        self.transport.forget(self)

    def _run(self) -> None:
        while True:
            with self._broker.lock:
                while not self._inbox and not self._stopping:
                    self._wakeup.wait()
                if self._stopping:
                    break
                tag, message = self._inbox.popleft()
            self._handle(tag, message)
        # Like a closed AMQP channel: whatever was not settled goes back to the queue.
        with self._broker.lock:
            self._broker.requeue(self.queue, self.take_unsettled())

    def _handle(self, tag: int, message: QueuedMessage) -> None:
        delivery = make_delivery(message, lambda action, reason: self._settle(tag, action, reason))
        if len(message.body) > self.transport.options.max_body_size:
            delivery.reject(f"body of {len(message.body)} bytes is over max_body_size")
            return
        try:
            self._handler(delivery)
        except ConnectionLost:
            # The handler could not finish because this transport is closing: leave the delivery unsettled
            # so that it is redelivered, as it would be after a crash.
            log.warning("handler for queue %s lost its connection; message will be redelivered", self.queue.name)
        except Exception as exc:
            log.exception("handler for queue %s failed on message %s", self.queue.name, message.message_id)
            delivery.reject(f"handler error: {exc!r}")  # no-op if already settled

    def _settle(self, tag: int, action: str, reason: str | None) -> None:
        with self._broker.lock:
            self._broker.settle(self, tag, action, reason)


def make_delivery(message: QueuedMessage, settle: Any) -> Delivery:
    """A Delivery of `message` whose ack/reject calls `settle(action, reason)`."""
    return Delivery(
        body=message.body,
        exchange=message.exchange,
        routing_key=message.routing_key,
        content_type=message.content_type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        user_id=message.user_id,
        timestamp=message.timestamp,
        headers=copy.deepcopy(message.headers),  # the handler may change its copy; a redelivery must not see it
        redelivered=message.redelivered,
        settler=settle,
    )


def _private_name() -> str:
    return f"amq.gen-{uuid.uuid4().hex}"  # the prefix RabbitMQ gives server-named queues


class MemoryTransport(Transport):
    """A connection to a `MemoryBroker` as one user."""

    def __init__(self, broker: MemoryBroker, user: str, options: TransportOptions) -> None:
        self.broker = broker
        self.user = user
        self.options = options
        self._subscriptions: list[MemorySubscription] = []
        self._reply_queue: str | None = None
        self._private_queues: list[str] = []
        self._closed = False

    def declare(self, topology: Topology) -> None:
        if self.options.predeclared:
            return
        topology = names.with_queue_type(topology, names.resolve_queue_type(self.options.queue_type, 1))
        with self.broker.lock:
            self._check_open()
            if self.options.queue_type == names.AUTO:  # as RabbitMQ's transport: queues that exist keep their type
                topology = self.broker.adopt_existing_types(topology)
            self.broker.declare_topology(topology, self)

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
        persistent: bool = True,  # the in-process broker keeps every message in memory, and never restarts
        confirm: bool = True,
    ) -> None:
        body = chunking.whole(body)  # a bytearray, view or pieces that the caller could still change
        if len(body) > self.options.max_body_size:
            raise MessageTooLarge(f"body of {len(body)} bytes is over max_body_size={self.options.max_body_size}")
        message = QueuedMessage(
            body=body,
            exchange=exchange,
            routing_key=routing_key,
            headers=copy.deepcopy(headers) if headers else {},
            message_id=message_id or uuid.uuid4().hex,
            correlation_id=correlation_id,
            reply_to=reply_to,
            user_id=self.user,
            timestamp=int(time.time()),
            expires_at=time.monotonic() + expiration if expiration is not None else None,
        )
        with self.broker.lock:
            self._check_open()
            try:
                self.broker.publish_message(message)
            except PublishFailed:
                if confirm:
                    raise  # unconfirmed, RabbitMQ drops an unroutable message without a word: so does this

    def consume(self, queue: str, handler: Handler, *, spool: SpoolOptions | None = None) -> Subscription:
        # Bodies are never chunked in memory, so `spool` has nothing to do here.
        with self.broker.lock:
            self._check_open()
            target = self.broker.queues.get(queue)
            if target is None:
                raise TransportError(f"cannot consume: no queue named {queue!r}")
            if target.owner is not None and target.owner is not self:
                raise TransportError(f"cannot consume {queue!r}: exclusive to another connection")
            subscription = MemorySubscription(self, target, handler)
            target.consumers.append(subscription)
            self._subscriptions.append(subscription)
            subscription.start()
            self.broker.dispatch(target)
        return subscription

    def reply_queue(self) -> str:
        self.declare(names.reply_topology())  # as RabbitMQ's transport does: the exchange may not exist yet
        with self.broker.lock:
            self._check_open()
            if self._reply_queue is None:
                name = _private_name()
                self._reply_queue = self._add_private(name, ((names.REPLY_EXCHANGE, name),))
            return self._reply_queue

    def private_queue(self, bindings: tuple[tuple[str, str], ...]) -> str:
        with self.broker.lock:
            self._check_open()
            name = self._add_private(_private_name(), bindings)
            self._private_queues.append(name)
            return name

    def _add_private(self, name: str, bindings: tuple[tuple[str, str], ...]) -> str:
        """Create the exclusive queue `name` bound as given (the caller holds the broker's lock)."""
        for exchange_name, _ in bindings:
            if exchange_name not in self.broker.exchanges:
                raise TransportError(f"cannot bind {name!r}: no exchange {exchange_name!r}")
        self.broker.queues[name] = BrokerQueue(name, {}, owner=self)
        for exchange_name, key in bindings:
            self.broker.exchanges[exchange_name].bindings.add((name, key))
        return name

    def hold_lock(self, name: str, on_lost: Callable[[str], None]) -> bool:
        # An in-process connection is never lost, so a lock it holds is never taken from it.
        with self.broker.lock:
            self._check_open()
            existing = self.broker.queues.get(name)
            if existing is not None:
                return existing.owner is self
            self._private_queues.append(self._add_private(name, ()))
            return True

    def consumer_count(self, queue: str) -> int:
        with self.broker.lock:
            self._check_open()
            target = self.broker.queues.get(queue)
            return len(target.consumers) if target is not None else 0

    def close(self) -> None:
        with self.broker.lock:
            if self._closed:
                return
            self._closed = True
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.cancel()
        with self.broker.lock:
            if self._reply_queue is not None:
                self.broker.delete_queue(self._reply_queue)
            for name in self._private_queues:
                self.broker.delete_queue(name)

    def simulate_connection_loss(self) -> None:
        """Act as if the connection dropped and came back at once: every unsettled delivery is requeued
        (redelivered=True) and its Delivery can no longer be settled; subscriptions and the reply queue stay."""
        with self.broker.lock:
            by_queue: dict[str, tuple[BrokerQueue, list[tuple[int, QueuedMessage]]]] = {}
            for subscription in self._subscriptions:
                entry = by_queue.setdefault(subscription.queue.name, (subscription.queue, []))
                entry[1].extend(subscription.take_unsettled())
            for queue, unsettled in by_queue.values():
                self.broker.requeue(queue, unsettled)

    def forget(self, subscription: MemorySubscription) -> None:
        with self.broker.lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionLost(f"transport of {self.user!r} is closed")
