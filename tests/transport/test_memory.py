"""Details of the in-process broker that the contract suite does not cover."""

from __future__ import annotations

import queue
import threading

import pytest

from fl_broker.errors import ConnectionLost, TransportError
from fl_broker.transport import Delivery, Subscription, TransportOptions, connect
from fl_broker.transport.memory import MemoryBroker, MemoryTransport, topic_matches
from fl_broker.wire import names
from fl_broker.wire.names import EXCHANGES, QueueSpec, Topology

TIMEOUT = 10.0


def plain_queue(name: str, **arguments: object) -> Topology:
    return Topology(exchanges=EXCHANGES, queues=(QueueSpec(name, arguments=dict(arguments)),))


def consumer_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("fl-memory-consumer")}


@pytest.mark.parametrize(
    ("binding", "key", "matches"),
    [
        ("run.1.#", "run.1.round.3.done", True),
        ("run.1.#", "run.1", True),
        ("run.1.#", "run.10.round", False),
        ("run.*.round.*.done", "run.1.round.3.done", True),
        ("run.*.round.*.done", "run.1.round.done", False),
        ("#", "", True),
        ("#", "a.b.c", True),
        ("*", "", False),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.#.z", "a.b.c", False),
        ("#.done", "run.1.round.3.done", True),
        ("exact", "exact", True),
        ("exact", "exactly", False),
    ],
)
def test_topic_matches_like_amqp(binding: str, key: str, matches: bool) -> None:
    assert topic_matches(binding, key) is matches


def test_max_length_drops_the_oldest_messages() -> None:
    transport = MemoryBroker().connect(user="server")
    transport.declare(plain_queue("test.capped", **{"x-max-length": 3, "x-overflow": "drop-head"}))
    for i in range(5):
        transport.publish(names.DEFAULT_EXCHANGE, "test.capped", b"%d" % i)
    assert transport.broker.queue_depth("test.capped") == 3
    assert [m.body for m in transport.broker.messages("test.capped")] == [b"2", b"3", b"4"]


def test_event_history_keeps_the_last_events() -> None:
    broker = MemoryBroker()
    transport = broker.connect(user="server")
    transport.declare(names.server_topology())
    for i in range(names.EVENT_HISTORY_LENGTH + 5):
        transport.publish(names.EVENT_EXCHANGE, names.event_key(1, "round", i, "done"), b"")
    history = broker.messages(names.EVENT_HISTORY_QUEUE)
    assert len(history) == names.EVENT_HISTORY_LENGTH
    assert history[0].routing_key == "run.1.round.5.done"


def test_unsupported_overflow_and_changed_arguments_are_refused() -> None:
    transport = MemoryBroker().connect(user="server")
    with pytest.raises(TransportError):
        transport.declare(plain_queue("test.q", **{"x-overflow": "reject-publish"}))
    transport.declare(plain_queue("test.q", **{"x-max-length": 3}))
    with pytest.raises(TransportError):
        transport.declare(plain_queue("test.q", **{"x-max-length": 4}))
    with pytest.raises(TransportError):
        transport.declare(Topology(exchanges=(names.ExchangeSpec(names.TASK_EXCHANGE, "topic"),), queues=()))


def test_registry_returns_one_broker_per_name() -> None:
    assert MemoryBroker.named("test-registry-a") is MemoryBroker.named("test-registry-a")
    assert MemoryBroker.named("test-registry-a") is not MemoryBroker.named("test-registry-b")

    transport = connect("memory://test-registry-a")
    assert isinstance(transport, MemoryTransport)
    assert transport.broker is MemoryBroker.named("test-registry-a")
    assert transport.user == "guest"
    transport.declare(plain_queue("test.q"))
    transport.publish(names.DEFAULT_EXCHANGE, "test.q", b"shared")
    assert MemoryBroker.named("test-registry-a").queue_depth("test.q") == 1
    with pytest.raises(KeyError):
        MemoryBroker.named("test-registry-b").queue_depth("test.q")
    transport.close()


def test_closed_transport_refuses_work() -> None:
    transport = MemoryBroker().connect(user="site-1")
    transport.declare(plain_queue("test.q"))
    transport.close()
    transport.close()  # idempotent
    with pytest.raises(ConnectionLost):
        transport.publish(names.DEFAULT_EXCHANGE, "test.q", b"late")
    with pytest.raises(ConnectionLost):
        transport.consume("test.q", lambda delivery: None)
    with pytest.raises(ConnectionLost):
        transport.declare(plain_queue("test.q"))


def test_close_joins_every_consumer_thread_and_deletes_the_reply_queue() -> None:
    broker = MemoryBroker()
    transport = broker.connect(user="site-1")
    transport.declare(plain_queue("test.q"))
    before = consumer_threads()
    transport.consume("test.q", lambda delivery: delivery.ack())
    transport.consume("test.q", lambda delivery: None)
    reply_queue = transport.reply_queue()
    transport.consume(reply_queue, lambda delivery: delivery.ack())
    for _ in range(5):
        transport.publish(names.DEFAULT_EXCHANGE, "test.q", b"x")
    assert len(consumer_threads() - before) == 3

    transport.close()
    assert not consumer_threads() - before  # (threads of other tests may end meanwhile)
    with pytest.raises(KeyError):
        broker.queue_depth(reply_queue)
    assert broker.queue_depth("test.q") > 0  # what the non-acking consumer held came back


def test_prefetch_bounds_unsettled_deliveries() -> None:
    broker = MemoryBroker()
    transport = broker.connect(user="site-1", options=TransportOptions(prefetch=2))
    transport.declare(plain_queue("test.q"))
    held: queue.Queue[Delivery] = queue.Queue()
    transport.consume("test.q", held.put)
    for i in range(5):
        transport.publish(names.DEFAULT_EXCHANGE, "test.q", b"%d" % i)
    assert broker.queue_depth("test.q") == 3  # dispatch is synchronous: two went out, three wait
    held.get(timeout=TIMEOUT).ack()
    assert broker.queue_depth("test.q") == 2
    transport.close()


def test_connection_loss_makes_old_deliveries_stale_and_keeps_the_reply_queue() -> None:
    broker = MemoryBroker()
    transport = broker.connect(user="site-1")
    transport.declare(plain_queue("test.q"))
    reply_queue = transport.reply_queue()
    held: queue.Queue[Delivery] = queue.Queue()
    transport.consume("test.q", held.put)
    transport.publish(names.DEFAULT_EXCHANGE, "test.q", b"x", message_id="m-1")
    stale = held.get(timeout=TIMEOUT)

    transport.simulate_connection_loss()
    fresh = held.get(timeout=TIMEOUT)
    assert (fresh.message_id, fresh.redelivered) == ("m-1", True)
    stale.reject("stale")  # no-op: must not dead-letter or settle the redelivered copy
    assert broker.queue_depth("test.q") == 0
    assert broker.messages("test.q") == []
    fresh.ack()
    assert transport.reply_queue() == reply_queue
    transport.close()
    assert broker.queue_depth("test.q") == 0  # the ack of the redelivered copy counted


def test_reply_queue_is_exclusive_but_reachable() -> None:
    broker = MemoryBroker()
    owner, other = broker.connect(user="admin"), broker.connect(user="server")
    reply_queue = owner.reply_queue()
    with pytest.raises(TransportError):
        other.consume(reply_queue, lambda delivery: None)
    other.publish(names.DEFAULT_EXCHANGE, reply_queue, b"reply")
    assert broker.queue_depth(reply_queue) == 1
    owner.simulate_connection_loss()
    assert broker.queue_depth(reply_queue) == 1
    owner.close()
    other.close()


def test_queued_message_is_isolated_from_the_publisher_and_the_handler() -> None:
    broker = MemoryBroker()
    transport = broker.connect(user="site-1")
    transport.declare(plain_queue("test.q"))
    headers: dict[str, object] = {"tags": ["a"]}
    transport.publish(names.DEFAULT_EXCHANGE, "test.q", b"x", headers=headers)
    headers["tags"].append("changed")  # type: ignore[attr-defined]
    assert broker.messages("test.q")[0].headers == {"tags": ["a"]}
    broker.messages("test.q")[0].headers["tags"].append("peek")
    assert broker.messages("test.q")[0].headers == {"tags": ["a"]}


def test_handler_exception_dead_letters_the_message() -> None:
    broker = MemoryBroker()
    transport = broker.connect(user="site-1")
    transport.declare(names.server_topology())
    transport.declare(plain_queue("test.q"))
    failed = threading.Event()

    def handler(delivery: Delivery) -> None:
        failed.set()
        raise RuntimeError("boom")

    subscription = transport.consume("test.q", handler)
    transport.publish(names.DEFAULT_EXCHANGE, "test.q", b"x")
    assert failed.wait(TIMEOUT)
    subscription.cancel()  # waits for the handler, so the rejection is done
    (dead,) = broker.messages(names.DEAD_LETTER_QUEUE)
    assert dead.headers[names.REJECT_REASON_HEADER] == "handler error: RuntimeError('boom')"
    assert dead.headers[names.REJECT_QUEUE_HEADER] == "test.q"
    transport.close()


def test_cancel_from_inside_the_handler_does_not_deadlock() -> None:
    transport = MemoryBroker().connect(user="site-1")
    transport.declare(plain_queue("test.q"))
    cancelled = threading.Event()
    subscriptions: list[Subscription] = []

    def handler(delivery: Delivery) -> None:
        delivery.ack()
        subscriptions[0].cancel()
        cancelled.set()

    before = consumer_threads()  # other tests' threads may still be around in a full run
    subscriptions.append(transport.consume("test.q", handler))
    started = consumer_threads() - before
    transport.publish(names.DEFAULT_EXCHANGE, "test.q", b"x")
    assert cancelled.wait(TIMEOUT)
    transport.close()  # joins the thread that cancelled itself
    assert started and not consumer_threads() & started
