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
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

from fl_broker.errors import PublishFailed, QueueTypeMismatch, TransportError
from fl_broker.transport.base import TransportOptions
from fl_broker.wire import names
from fl_broker.wire.names import ExchangeSpec, QueueSpec, Topology

if TYPE_CHECKING:
    from fl_broker.transport.memory.connection import MemorySubscription, MemoryTransport

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


class BrokerQueue:
    def __init__(self, name: str, arguments: dict[str, Any], owner: MemoryTransport | None) -> None:
        self.name = name
        self.arguments = dict(arguments)
        self.owner = owner  # the transport of an exclusive queue
        self.max_length: int | None = arguments.get("x-max-length")
        self.ready: deque[QueuedMessage] = deque()
        self.consumers: list[MemorySubscription] = []
        self._next = 0

    def next_consumer(self) -> MemorySubscription | None:
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
        self.lock = threading.Lock()
        self.exchanges: dict[str, _Exchange] = {}
        self.queues: dict[str, BrokerQueue] = {}
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
        from fl_broker.transport.memory.connection import MemoryTransport

        return MemoryTransport(self, user, options or TransportOptions())

    def queue_depth(self, name: str) -> int:
        """Number of ready messages in queue `name` (delivered but unsettled ones are not counted)."""
        with self.lock:
            return len(self._queue(name).ready)

    def messages(self, name: str) -> list[QueuedMessage]:
        """Copies of the ready messages of queue `name`, oldest first, without consuming them."""
        with self.lock:
            return [replace(m, headers=copy.deepcopy(m.headers)) for m in self._queue(name).ready]

    def _queue(self, name: str) -> BrokerQueue:
        queue = self.queues.get(name)
        if queue is None:
            raise KeyError(f"no queue named {name!r}")
        return queue

    # Everything below runs with self.lock held.

    def declare_topology(self, topology: Topology, declarer: MemoryTransport) -> None:
        for exchange in topology.exchanges:
            self._declare_exchange(exchange)
        for queue in topology.queues:
            self._declare_queue(queue, declarer)

    def adopt_existing_types(self, topology: Topology) -> Topology:
        """`topology` with each queue that exists already declared as the type it has."""
        queues = []
        for spec in topology.queues:
            existing = self.queues.get(spec.name)
            if existing is not None:
                current = existing.arguments.get(names.QUEUE_TYPE_ARGUMENT, names.CLASSIC)
                spec = replace(spec, arguments={**spec.arguments, names.QUEUE_TYPE_ARGUMENT: current})
            queues.append(spec)
        return replace(topology, queues=tuple(queues))

    def _declare_exchange(self, spec: ExchangeSpec) -> None:
        if spec.name == names.DEFAULT_EXCHANGE or spec.name.startswith("amq."):
            raise TransportError(f"exchange name {spec.name!r} is reserved")
        if spec.type not in _EXCHANGE_TYPES:
            raise TransportError(f"exchange type {spec.type!r} is not supported by the memory transport")
        existing = self.exchanges.setdefault(spec.name, _Exchange(spec.name, spec.type))
        if existing.type != spec.type:
            raise TransportError(f"exchange {spec.name!r} exists with type {existing.type!r}, not {spec.type!r}")

    def _declare_queue(self, spec: QueueSpec, declarer: MemoryTransport) -> None:
        if not spec.name or spec.name.startswith("amq."):
            raise TransportError(f"queue name {spec.name!r} is reserved")
        _check_queue_arguments(spec)
        queue = self.queues.get(spec.name)
        if queue is None:
            queue = self.queues[spec.name] = BrokerQueue(spec.name, spec.arguments, owner=None)
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
            exchange = self.exchanges.get(exchange_name)
            if exchange is None:
                raise TransportError(f"cannot bind {spec.name!r}: no exchange {exchange_name!r}")
            exchange.bindings.add((spec.name, key))

    def publish_message(self, message: QueuedMessage) -> None:
        if message.exchange == names.DEFAULT_EXCHANGE:
            targets = {message.routing_key} if message.routing_key in self.queues else set()
        else:
            exchange = self.exchanges.get(message.exchange)
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
            self._enqueue(self.queues[name], message)

    def _enqueue(self, queue: BrokerQueue, message: QueuedMessage) -> None:
        queue.ready.append(message)
        # x-overflow drop-head: RabbitMQ counts only ready messages against x-max-length.
        if queue.max_length is not None:
            while len(queue.ready) > queue.max_length:
                queue.ready.popleft()
        self.dispatch(queue)

    def dispatch(self, queue: BrokerQueue) -> None:
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

    def requeue(self, queue: BrokerQueue, unsettled: list[tuple[int, QueuedMessage]]) -> None:
        """Put unsettled deliveries back at the head of `queue`, in delivery order, marked redelivered."""
        if not unsettled or self.queues.get(queue.name) is not queue:
            return
        for _, message in sorted(unsettled, key=lambda item: item[0], reverse=True):
            queue.ready.appendleft(replace(message, redelivered=True))
        self.dispatch(queue)

    def settle(self, consumer: MemorySubscription, tag: int, action: str, reason: str | None) -> None:
        message = consumer.unacked.pop(tag, None)
        if message is None:
            return  # stale: the delivery was requeued by a cancel, close or connection loss
        if action == "reject":
            self._dead_letter(message, consumer.queue.name, reason or "")
        elif action == "release":
            self.requeue(consumer.queue, [(tag, message)])
            return  # requeue() dispatches
        self.dispatch(consumer.queue)

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
        exchange = self.exchanges.get(names.DEAD_LETTER_EXCHANGE)
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
            self._enqueue(self.queues[name], dead)

    def delete_queue(self, name: str) -> None:
        self.queues.pop(name, None)
        for exchange in self.exchanges.values():
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
