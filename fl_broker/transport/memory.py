"""In-process transport: a thread-safe stand-in for the parts of RabbitMQ that fl-broker relies on.

Used by `simulate` and by fast tests. It keeps the contract of `base.py` with RabbitMQ's semantics:
direct, topic and fanout exchanges plus the default exchange, mandatory publishing, per-subscription
prefetch with round-robin dispatch, acks, rejection into `fl.dlx`, redelivery of unsettled messages and
`x-max-length` with `drop-head`. One `MemoryBroker` is one broker; `MemoryBroker.named()` gives the
process-wide broker that `memory://NAME` URLs connect to.

Locking: every broker, queue and subscription state change happens under the broker's single lock.
Each subscription thread waits on a Condition bound to that lock, so a dispatch wakes exactly the thread
it handed a message to. Handlers always run without the lock held.
"""

from __future__ import annotations

import copy
import itertools
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from fl_broker.errors import ConnectionLost, MessageTooLarge, PublishFailed, QueueTypeMismatch, TransportError
from fl_broker.transport import chunking
from fl_broker.transport.base import Delivery, Handler, Subscription, Transport, TransportOptions
from fl_broker.transport.spool import SpoolOptions
from fl_broker.wire import names
from fl_broker.wire.names import ExchangeSpec, QueueSpec, Topology

log = logging.getLogger(__name__)

_EXCHANGE_TYPES = frozenset({"direct", "topic", "fanout"})
_UNSUPPORTED_QUEUE_ARGS = frozenset({"x-max-length-bytes", "x-message-ttl", "x-expires"})


@dataclass(frozen=True)
class QueuedMessage:
    """A message as a queue holds it. Never changed after publish; `MemoryBroker.messages()` gives copies."""

    body: bytes
    exchange: str
    routing_key: str
    headers: dict[str, Any]
    message_id: str
    correlation_id: str | None
    reply_to: str | None
    user_id: str
    timestamp: int
    content_type: str = names.CONTENT_TYPE
    redelivered: bool = False
    expires_at: float | None = None  # time.monotonic() after which it is dead-lettered, not delivered


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """AMQP topic matching: words are split on '.', '*' matches one word, '#' zero or more words."""
    words = routing_key.split(".") if routing_key else []
    # reachable[j]: the binding words seen so far can match exactly words[:j]
    reachable = [True] + [False] * len(words)
    for part in binding_key.split(".") if binding_key else []:
        if part == "#":
            reachable = list(itertools.accumulate(reachable, lambda a, b: a or b))
        else:
            reachable = [False] + [reachable[j] and part in ("*", words[j]) for j in range(len(words))]
    return reachable[-1]


@dataclass
class _Exchange:
    name: str
    type: str
    bindings: set[tuple[str, str]] = field(default_factory=set)  # (queue name, binding key)

    def route(self, routing_key: str) -> set[str]:
        if self.type == "fanout":
            return {queue for queue, _ in self.bindings}
        if self.type == "direct":
            return {queue for queue, key in self.bindings if key == routing_key}
        return {queue for queue, key in self.bindings if topic_matches(key, routing_key)}


class _Queue:
    def __init__(self, name: str, arguments: dict[str, Any], owner: MemoryTransport | None) -> None:
        self.name = name
        self.arguments = dict(arguments)
        self.owner = owner  # the transport of an exclusive queue
        self.max_length: int | None = arguments.get("x-max-length")
        self.ready: deque[QueuedMessage] = deque()
        self.consumers: list[_MemorySubscription] = []
        self._next = 0

    def next_consumer(self) -> _MemorySubscription | None:
        """The next consumer, round-robin, that may take one more unsettled delivery."""
        count = len(self.consumers)
        for step in range(count):
            index = (self._next + step) % count
            if self.consumers[index].has_capacity():
                self._next = (index + 1) % count
                return self.consumers[index]
        return None


class MemoryBroker:
    """One in-process broker: exchanges, queues and bindings shared by the transports connected to it."""

    _registry: ClassVar[dict[str, MemoryBroker]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exchanges: dict[str, _Exchange] = {}
        self._queues: dict[str, _Queue] = {}
        self._tags = itertools.count(1)  # delivery tags, unique across the broker

    @classmethod
    def named(cls, name: str) -> MemoryBroker:
        """The process-wide broker registered under `name`, created on first use (`memory://NAME`)."""
        with cls._registry_lock:
            broker = cls._registry.get(name)
            if broker is None:
                broker = cls._registry[name] = cls()
            return broker

    def connect(self, user: str, options: TransportOptions | None = None) -> MemoryTransport:
        """Open a new connection to this broker as `user` (the `user_id` of everything it publishes)."""
        return MemoryTransport(self, user, options or TransportOptions())

    def queue_depth(self, name: str) -> int:
        """Number of ready messages in queue `name` (delivered but unsettled ones are not counted)."""
        with self._lock:
            return len(self._queue(name).ready)

    def messages(self, name: str) -> list[QueuedMessage]:
        """Copies of the ready messages of queue `name`, oldest first, without consuming them."""
        with self._lock:
            return [replace(m, headers=copy.deepcopy(m.headers)) for m in self._queue(name).ready]

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            raise KeyError(f"no queue named {name!r}")
        return queue

    # Everything below runs with self._lock held.

    def _declare(self, topology: Topology, declarer: MemoryTransport) -> None:
        for exchange in topology.exchanges:
            self._declare_exchange(exchange)
        for queue in topology.queues:
            self._declare_queue(queue, declarer)

    def _declare_exchange(self, spec: ExchangeSpec) -> None:
        if spec.name == names.DEFAULT_EXCHANGE or spec.name.startswith("amq."):
            raise TransportError(f"exchange name {spec.name!r} is reserved")
        if spec.type not in _EXCHANGE_TYPES:
            raise TransportError(f"exchange type {spec.type!r} is not supported by the memory transport")
        existing = self._exchanges.setdefault(spec.name, _Exchange(spec.name, spec.type))
        if existing.type != spec.type:
            raise TransportError(f"exchange {spec.name!r} exists with type {existing.type!r}, not {spec.type!r}")

    def _declare_queue(self, spec: QueueSpec, declarer: MemoryTransport) -> None:
        if not spec.name or spec.name.startswith("amq."):
            raise TransportError(f"queue name {spec.name!r} is reserved")
        _check_queue_arguments(spec)
        queue = self._queues.get(spec.name)
        if queue is None:
            queue = self._queues[spec.name] = _Queue(spec.name, spec.arguments, owner=None)
        elif queue.arguments != spec.arguments:
            current = queue.arguments.get(names.QUEUE_TYPE_ARGUMENT, names.CLASSIC)
            wanted = spec.arguments.get(names.QUEUE_TYPE_ARGUMENT, names.CLASSIC)
            if current != wanted:
                raise QueueTypeMismatch(spec.name, current, wanted)
            raise TransportError(
                f"queue {spec.name!r} exists with arguments {queue.arguments!r}, not {spec.arguments!r}"
            )
        elif queue.owner is not None and queue.owner is not declarer:
            raise TransportError(f"queue {spec.name!r} is exclusive to another connection")
        for exchange_name, key in spec.bindings:
            exchange = self._exchanges.get(exchange_name)
            if exchange is None:
                raise TransportError(f"cannot bind {spec.name!r}: no exchange {exchange_name!r}")
            exchange.bindings.add((spec.name, key))

    def _publish(self, message: QueuedMessage) -> None:
        if message.exchange == names.DEFAULT_EXCHANGE:
            targets = {message.routing_key} if message.routing_key in self._queues else set()
        else:
            exchange = self._exchanges.get(message.exchange)
            if exchange is None:
                raise PublishFailed(f"no exchange named {message.exchange!r}")
            # Sender-selected distribution, as RabbitMQ does it: CC and BCC headers add routing keys;
            # BCC is removed before delivery.
            extra = [*message.headers.get("CC", []), *message.headers.get("BCC", [])]
            targets = set().union(*(exchange.route(key) for key in [message.routing_key, *extra]))
            if "BCC" in message.headers:
                message = replace(message, headers={k: v for k, v in message.headers.items() if k != "BCC"})
        if not targets:
            raise PublishFailed(
                f"unroutable message: nothing bound to {message.exchange!r} with key {message.routing_key!r}"
            )
        for name in targets:
            self._enqueue(self._queues[name], message)

    def _enqueue(self, queue: _Queue, message: QueuedMessage) -> None:
        queue.ready.append(message)
        # x-overflow drop-head: RabbitMQ counts only ready messages against x-max-length.
        if queue.max_length is not None:
            while len(queue.ready) > queue.max_length:
                queue.ready.popleft()
        self._dispatch(queue)

    def _dispatch(self, queue: _Queue) -> None:
        while queue.ready:
            head = queue.ready[0]
            if head.expires_at is not None and time.monotonic() >= head.expires_at:
                queue.ready.popleft()  # like RabbitMQ, a message expires when it reaches the head
                self._dead_letter(head, queue.name, "expired")
                continue
            consumer = queue.next_consumer()
            if consumer is None:
                return
            consumer.push(next(self._tags), queue.ready.popleft())

    def _requeue(self, queue: _Queue, unsettled: list[tuple[int, QueuedMessage]]) -> None:
        """Put unsettled deliveries back at the head of `queue`, in delivery order, marked redelivered."""
        if not unsettled or self._queues.get(queue.name) is not queue:
            return
        for _, message in sorted(unsettled, key=lambda item: item[0], reverse=True):
            queue.ready.appendleft(replace(message, redelivered=True))
        self._dispatch(queue)

    def _settle(self, consumer: _MemorySubscription, tag: int, action: str, reason: str | None) -> None:
        message = consumer.unacked.pop(tag, None)
        if message is None:
            return  # stale: the delivery was requeued by a cancel, close or connection loss
        if action == "reject":
            self._dead_letter(message, consumer.queue.name, reason or "")
        self._dispatch(consumer.queue)

    def _dead_letter(self, message: QueuedMessage, queue_name: str, reason: str) -> None:
        headers = dict(message.headers)
        headers[names.REJECT_REASON_HEADER] = reason
        headers[names.REJECT_QUEUE_HEADER] = queue_name
        # Like the RabbitMQ transport: republished to fl.dlx with the source queue as routing key.
        # As in RabbitMQ, a dead letter loses its expiration, so it cannot expire again.
        dead = replace(
            message,
            headers=headers,
            exchange=names.DEAD_LETTER_EXCHANGE,
            routing_key=queue_name,
            redelivered=False,
            expires_at=None,
        )
        exchange = self._exchanges.get(names.DEAD_LETTER_EXCHANGE)
        targets = exchange.route(queue_name) if exchange else set()
        if not targets:
            # RabbitMQ drops a dead letter that routes nowhere; say so, as the message is gone.
            log.warning(
                "dropped rejected message %s from %s: nothing bound to %s",
                message.message_id,
                queue_name,
                names.DEAD_LETTER_EXCHANGE,
            )
        for name in targets:
            self._enqueue(self._queues[name], dead)

    def _delete_queue(self, name: str) -> None:
        self._queues.pop(name, None)
        for exchange in self._exchanges.values():
            exchange.bindings = {(queue, key) for queue, key in exchange.bindings if queue != name}


def _check_queue_arguments(spec: QueueSpec) -> None:
    overflow = spec.arguments.get("x-overflow", "drop-head")
    if overflow != "drop-head":
        raise TransportError(f"queue {spec.name!r}: x-overflow {overflow!r} is not supported (drop-head only)")
    max_length = spec.arguments.get("x-max-length")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 0):
        raise TransportError(f"queue {spec.name!r}: x-max-length must be an int >= 0, got {max_length!r}")
    unsupported = _UNSUPPORTED_QUEUE_ARGS & spec.arguments.keys()
    if unsupported:
        raise TransportError(f"queue {spec.name!r}: {sorted(unsupported)} not supported by the memory transport")


class _MemorySubscription(Subscription):
    """A consumer of one queue, with its own thread that runs the handler one delivery at a time."""

    def __init__(self, transport: MemoryTransport, queue: _Queue, handler: Handler) -> None:
        self.transport = transport
        self.queue = queue
        self._broker = transport.broker
        self._handler = handler
        self._prefetch = transport.options.effective_prefetch()
        self._wakeup = threading.Condition(self._broker._lock)
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
        with self._broker._lock:
            if not self._stopping:
                self._stopping = True
                if self in self.queue.consumers:
                    self.queue.consumers.remove(self)
                self._wakeup.notify()
        if threading.current_thread() is self._thread:
            return  # cancelled by its own handler: the thread ends after it, and close() joins it
        self._thread.join()
        self.transport._forget(self)

    def _run(self) -> None:
        while True:
            with self._broker._lock:
                while not self._inbox and not self._stopping:
                    self._wakeup.wait()
                if self._stopping:
                    break
                tag, message = self._inbox.popleft()
            self._handle(tag, message)
        # Like a closed AMQP channel: whatever was not settled goes back to the queue.
        with self._broker._lock:
            self._broker._requeue(self.queue, self.take_unsettled())

    def _handle(self, tag: int, message: QueuedMessage) -> None:
        delivery = _make_delivery(message, lambda action, reason: self._settle(tag, action, reason))
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
        with self._broker._lock:
            self._broker._settle(self, tag, action, reason)


def _make_delivery(message: QueuedMessage, settle: Any) -> Delivery:
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
        self._subscriptions: list[_MemorySubscription] = []
        self._reply_queue: str | None = None
        self._private_queues: list[str] = []
        self._closed = False

    def declare(self, topology: Topology) -> None:
        if self.options.predeclared:
            return
        topology = names.with_queue_type(topology, self.options.queue_type)
        with self.broker._lock:
            self._check_open()
            self.broker._declare(topology, self)

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
        with self.broker._lock:
            self._check_open()
            self.broker._publish(message)

    def consume(self, queue: str, handler: Handler, *, spool: SpoolOptions | None = None) -> Subscription:
        # Bodies are never chunked in memory, so `spool` has nothing to do here.
        with self.broker._lock:
            self._check_open()
            target = self.broker._queues.get(queue)
            if target is None:
                raise TransportError(f"cannot consume: no queue named {queue!r}")
            if target.owner is not None and target.owner is not self:
                raise TransportError(f"cannot consume {queue!r}: exclusive to another connection")
            subscription = _MemorySubscription(self, target, handler)
            target.consumers.append(subscription)
            self._subscriptions.append(subscription)
            subscription.start()
            self.broker._dispatch(target)
        return subscription

    def reply_queue(self) -> str:
        self.declare(names.reply_topology())  # as RabbitMQ's transport does: the exchange may not exist yet
        with self.broker._lock:
            self._check_open()
            if self._reply_queue is None:
                name = _private_name()
                self._reply_queue = self._add_private(name, ((names.REPLY_EXCHANGE, name),))
            return self._reply_queue

    def private_queue(self, bindings: tuple[tuple[str, str], ...]) -> str:
        with self.broker._lock:
            self._check_open()
            name = self._add_private(_private_name(), bindings)
            self._private_queues.append(name)
            return name

    def _add_private(self, name: str, bindings: tuple[tuple[str, str], ...]) -> str:
        """Create the exclusive queue `name` bound as given (the caller holds the broker's lock)."""
        for exchange_name, _ in bindings:
            if exchange_name not in self.broker._exchanges:
                raise TransportError(f"cannot bind {name!r}: no exchange {exchange_name!r}")
        self.broker._queues[name] = _Queue(name, {}, owner=self)
        for exchange_name, key in bindings:
            self.broker._exchanges[exchange_name].bindings.add((name, key))
        return name

    def consumer_count(self, queue: str) -> int:
        with self.broker._lock:
            self._check_open()
            target = self.broker._queues.get(queue)
            return len(target.consumers) if target is not None else 0

    def close(self) -> None:
        with self.broker._lock:
            if self._closed:
                return
            self._closed = True
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.cancel()
        with self.broker._lock:
            if self._reply_queue is not None:
                self.broker._delete_queue(self._reply_queue)
            for name in self._private_queues:
                self.broker._delete_queue(name)

    def simulate_connection_loss(self) -> None:
        """Act as if the connection dropped and came back at once: every unsettled delivery is requeued
        (redelivered=True) and its Delivery can no longer be settled; subscriptions and the reply queue stay."""
        with self.broker._lock:
            by_queue: dict[str, tuple[_Queue, list[tuple[int, QueuedMessage]]]] = {}
            for subscription in self._subscriptions:
                entry = by_queue.setdefault(subscription.queue.name, (subscription.queue, []))
                entry[1].extend(subscription.take_unsettled())
            for queue, unsettled in by_queue.values():
                self.broker._requeue(queue, unsettled)

    def _forget(self, subscription: _MemorySubscription) -> None:
        with self.broker._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionLost(f"transport of {self.user!r} is closed")
