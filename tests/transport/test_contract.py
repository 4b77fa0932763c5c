"""The transport contract (fl_broker/transport/base.py), checked on the in-process broker and on RabbitMQ.

Absence of a message is checked with a marker published after it: queues are FIFO and publishes are
confirmed in order, so if the marker is the next delivery, nothing was queued before it.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import numpy as np
import pytest

from fl_broker.errors import MessageTooLarge, PublishFailed
from fl_broker.transport import Delivery, Transport
from fl_broker.transport.base import MiB
from fl_broker.wire import names
from fl_broker.wire.names import EXCHANGES, QueueSpec, Topology

from .conftest import BrokerHarness

TIMEOUT = 30.0  # generous: on RabbitMQ a delivery may wait for a reconnect


class Collector:
    """A handler that hands each delivery to the test thread, acking it first if `ack`."""

    def __init__(self, *, ack: bool = False) -> None:
        self.ack = ack
        self._deliveries: queue.Queue[Delivery] = queue.Queue()

    def __call__(self, delivery: Delivery) -> None:
        if self.ack:
            delivery.ack()
        self._deliveries.put(delivery)

    def get(self, timeout: float = TIMEOUT) -> Delivery:
        try:
            return self._deliveries.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no delivery within {timeout} s")


def plain_queues(*queue_names: str) -> Topology:
    """Every exchange, plus unbound queues reachable through the default exchange."""
    return Topology(exchanges=EXCHANGES, queues=tuple(QueueSpec(name) for name in queue_names))


def first_delivery(transport: Transport, queue_name: str) -> Delivery:
    """Consume `queue_name` until one delivery arrives, ack it, stop consuming and return it."""
    collector = Collector(ack=True)
    subscription = transport.consume(queue_name, collector)
    try:
        return collector.get()
    finally:
        subscription.cancel()


def test_round_trip_keeps_every_property(broker: BrokerHarness) -> None:
    publisher, consumer = broker.connect(), broker.connect()
    publisher.declare(names.site_topology("site-1"))
    received = Collector(ack=True)
    consumer.consume(names.task_queue("site-1"), received)

    before = int(time.time())
    publisher.publish(
        names.TASK_EXCHANGE,
        "site-1",
        b"\x00\x01payload",
        message_id="m-1",
        correlation_id="c-1",
        reply_to="some.reply.queue",
        headers={"x-fl-run": 1, "kind": "task"},
    )
    publisher.publish(names.TASK_EXCHANGE, "site-1", b"no id")
    after = int(time.time())

    delivery = received.get()
    assert delivery.body == b"\x00\x01payload"
    assert (delivery.exchange, delivery.routing_key) == (names.TASK_EXCHANGE, "site-1")
    assert (delivery.message_id, delivery.correlation_id, delivery.reply_to) == ("m-1", "c-1", "some.reply.queue")
    assert delivery.headers["x-fl-run"] == 1 and delivery.headers["kind"] == "task"
    assert delivery.user_id == publisher.user == broker.login
    assert delivery.content_type == names.CONTENT_TYPE
    assert delivery.timestamp is not None and before - 1 <= delivery.timestamp <= after + 1
    assert not delivery.redelivered and delivery.settled

    generated = received.get()
    assert generated.body == b"no id" and generated.message_id


def test_published_bytearray_cannot_be_changed_afterwards(broker: BrokerHarness) -> None:
    transport = broker.connect()
    transport.declare(plain_queues("test.q"))
    body = bytearray(b"original")
    transport.publish(names.DEFAULT_EXCHANGE, "test.q", body)  # type: ignore[arg-type]
    body[:] = b"CHANGED!"
    assert first_delivery(transport, "test.q").body == b"original"


def test_task_reaches_only_the_addressed_site(broker: BrokerHarness) -> None:
    server, site1, site2 = broker.connect(), broker.connect(), broker.connect()
    site1.declare(names.site_topology("site-1"))
    site2.declare(names.site_topology("site-2"))

    server.publish(names.TASK_EXCHANGE, "site-1", b"for site-1")
    server.publish(names.TASK_EXCHANGE, "site-2", b"marker")

    assert first_delivery(site1, names.task_queue("site-1")).body == b"for site-1"
    assert first_delivery(site2, names.task_queue("site-2")).body == b"marker"


def test_unroutable_publish_raises(broker: BrokerHarness) -> None:
    transport = broker.connect()
    transport.declare(names.site_topology("site-1"))
    with pytest.raises(PublishFailed):
        transport.publish(names.TASK_EXCHANGE, "site-9", b"nobody listens")
    with pytest.raises(PublishFailed):
        transport.publish(names.DEFAULT_EXCHANGE, "no.such.queue", b"nobody listens")
    transport.publish(names.TASK_EXCHANGE, "site-1", b"still usable")
    assert first_delivery(transport, names.task_queue("site-1")).body == b"still usable"


def test_declare_is_idempotent(broker: BrokerHarness) -> None:
    server, site = broker.connect(), broker.connect()
    for _ in range(2):
        server.declare(names.server_topology())
        site.declare(names.site_topology("site-1"))
    server.declare(names.site_topology("site-1"))

    site.publish(names.RESULT_EXCHANGE, names.SERVER, b"result")
    assert first_delivery(server, names.SERVER_RESULT_QUEUE).body == b"result"


def test_unacked_message_is_redelivered_once_after_its_consumer_dies(broker: BrokerHarness) -> None:
    publisher = broker.connect()
    publisher.declare(names.site_topology("site-1"))
    task_queue = names.task_queue("site-1")
    publisher.publish(names.TASK_EXCHANGE, "site-1", b"task", message_id="t-1")

    doomed = broker.connect()
    unacked = Collector()
    doomed.consume(task_queue, unacked)
    first = unacked.get()
    assert first.message_id == "t-1" and not first.redelivered
    doomed.close()  # dies without settling
    first.ack()  # too late: a no-op, never settled on some other connection

    survivor = broker.connect()
    second = first_delivery(survivor, task_queue)
    assert (second.message_id, second.body, second.redelivered) == ("t-1", b"task", True)
    survivor.close()  # the ack must have reached the broker before the connection went

    publisher.publish(names.TASK_EXCHANGE, "site-1", b"marker", message_id="marker")
    assert first_delivery(broker.connect(), task_queue).message_id == "marker"


def queue_with_messages(broker: BrokerHarness, count: int) -> Transport:
    """A connection, and queue test.q holding messages m-0 .. m-(count-1)."""
    transport = broker.connect()
    transport.declare(plain_queues("test.q"))
    for i in range(count):
        transport.publish(names.DEFAULT_EXCHANGE, "test.q", b"%d" % i, message_id=f"m-{i}")
    return transport


def test_cancel_requeues_unsettled_deliveries_in_order(broker: BrokerHarness) -> None:
    transport = queue_with_messages(broker, 3)
    held = Collector()
    subscription = transport.consume("test.q", held)
    assert [held.get().message_id for _ in range(3)] == ["m-0", "m-1", "m-2"]
    subscription.cancel()

    again = Collector(ack=True)
    transport.consume("test.q", again)
    redelivered = [again.get() for _ in range(3)]
    assert [d.message_id for d in redelivered] == ["m-0", "m-1", "m-2"]
    assert all(d.redelivered for d in redelivered)


def test_released_message_is_delivered_again_to_a_running_consumer(broker: BrokerHarness) -> None:
    transport = queue_with_messages(broker, 2)
    seen = Collector()
    transport.consume("test.q", seen)
    first = seen.get()
    assert (first.message_id, first.redelivered) == ("m-0", False)
    first.release()  # the consumer keeps running: the message must come round again, not stay held
    first.ack()  # already settled: a no-op
    later = [seen.get() for _ in range(2)]
    assert sorted((d.message_id, d.redelivered) for d in later) == [("m-0", True), ("m-1", False)]
    for delivery in later:
        delivery.ack()
    transport.publish(names.DEFAULT_EXCHANGE, "test.q", b"marker", message_id="marker")
    assert seen.get().message_id == "marker"  # nothing else was left in the queue


def test_rejected_message_lands_in_dead_letters_with_reason(broker: BrokerHarness) -> None:
    server, site = broker.connect(), broker.connect()
    server.declare(names.server_topology())
    site.declare(names.site_topology("site-1"))
    site.consume(names.task_queue("site-1"), lambda delivery: delivery.reject("wrong round"))

    server.publish(names.TASK_EXCHANGE, "site-1", b"payload", message_id="m-1", headers={"x-test": "kept"})

    dead = first_delivery(server, names.DEAD_LETTER_QUEUE)
    assert dead.body == b"payload"
    assert dead.headers[names.REJECT_REASON_HEADER] == "wrong round"
    assert dead.headers[names.REJECT_QUEUE_HEADER] == names.task_queue("site-1")
    assert dead.headers["x-test"] == "kept"
    assert dead.message_id == "m-1"


def test_topic_routing_on_event_exchange(broker: BrokerHarness) -> None:
    transport = broker.connect()
    bound = {"test.run1": "run.1.#", "test.run2": "run.2.#", "test.done": "run.*.round.*.done"}
    transport.declare(
        Topology(
            exchanges=EXCHANGES,
            queues=tuple(QueueSpec(q, ((names.EVENT_EXCHANGE, key),)) for q, key in bound.items()),
        )
    )
    for key in (names.event_key(1, "round", 3, "done"), names.event_key(1), names.event_key(2, "marker")):
        transport.publish(names.EVENT_EXCHANGE, key, key.encode())

    run1 = Collector(ack=True)
    transport.consume("test.run1", run1)
    assert [run1.get().routing_key for _ in range(2)] == ["run.1.round.3.done", "run.1"]  # '#' may be empty
    assert first_delivery(transport, "test.run2").routing_key == "run.2.marker"
    assert first_delivery(transport, "test.done").routing_key == "run.1.round.3.done"


def test_request_reply_through_reply_queue(broker: BrokerHarness) -> None:
    server, client = broker.connect(), broker.connect()
    reply_queue = client.reply_queue()  # first, on an empty vhost: the transport declares fl.reply itself
    assert client.reply_queue() == reply_queue
    server.declare(plain_queues("test.requests"))

    def answer(request: Delivery) -> None:
        assert request.reply_to is not None
        server.publish(
            names.REPLY_EXCHANGE, request.reply_to, b"pong:" + request.body, correlation_id=request.correlation_id
        )
        request.ack()

    server.consume("test.requests", answer)
    replies = Collector(ack=True)
    client.consume(reply_queue, replies)

    client.publish(names.DEFAULT_EXCHANGE, "test.requests", b"ping", reply_to=reply_queue, correlation_id="c-7")
    reply = replies.get()
    assert (reply.body, reply.correlation_id, reply.user_id) == (b"pong:ping", "c-7", server.user)
    with pytest.raises(PublishFailed):  # fl.reply reaches reply queues by their own name only
        server.publish(names.REPLY_EXCHANGE, "test.requests", b"not a reply")


def test_body_over_max_body_size_is_refused(broker: BrokerHarness) -> None:
    transport = broker.connect(broker.options(max_body_size=1024))
    transport.declare(plain_queues("test.q"))
    with pytest.raises(MessageTooLarge):
        transport.publish(names.DEFAULT_EXCHANGE, "test.q", bytes(1025))
    transport.publish(names.DEFAULT_EXCHANGE, "test.q", bytes(1024))
    assert first_delivery(transport, "test.q").body == bytes(1024)


@pytest.mark.slow
def test_300_mib_array_round_trips_byte_exact(broker: BrokerHarness) -> None:
    array = np.arange(300 * MiB // 4, dtype=np.float32)
    payload = array.tobytes()
    publisher, consumer = broker.connect(), broker.connect()
    publisher.declare(plain_queues("test.big"))
    publisher.publish(names.DEFAULT_EXCHANGE, "test.big", payload, message_id="big")

    delivery = first_delivery(consumer, "test.big")
    assert delivery.message_id == "big" and len(delivery.body) == len(payload)
    assert delivery.body == payload
    assert np.array_equal(np.frombuffer(delivery.body, dtype=np.float32), array)


def test_drop_connections_redelivers_and_everything_keeps_working(broker: BrokerHarness) -> None:
    publisher, worker = broker.connect(), broker.connect()
    publisher.declare(names.site_topology("site-1"))
    started, proceed = threading.Event(), threading.Event()
    seen: queue.Queue[Delivery] = queue.Queue()

    def handler(delivery: Delivery) -> None:
        seen.put(delivery)
        if delivery.message_id == "t-1" and not delivery.redelivered:
            started.set()
            proceed.wait(TIMEOUT)  # still working when the connection drops
        delivery.ack()  # for the first delivery: stale, must be a no-op

    worker.consume(names.task_queue("site-1"), handler)
    publisher.publish(names.TASK_EXCHANGE, "site-1", b"task 1", message_id="t-1")
    assert started.wait(TIMEOUT)
    broker.drop_connections()
    proceed.set()

    again = seen.get(timeout=TIMEOUT)
    assert again.message_id == "t-1" and not again.redelivered  # the one from before the drop
    again = seen.get(timeout=TIMEOUT)
    assert (again.message_id, again.body, again.redelivered) == ("t-1", b"task 1", True)

    publisher.publish(names.TASK_EXCHANGE, "site-1", b"task 2", message_id="t-2")
    after = seen.get(timeout=TIMEOUT)
    assert (after.message_id, after.redelivered) == ("t-2", False)


def test_settling_is_idempotent(broker: BrokerHarness) -> None:
    server, worker = broker.connect(), broker.connect()
    server.declare(names.server_topology())
    server.declare(plain_queues("test.q"))
    settled: queue.Queue[bool] = queue.Queue()

    def handler(delivery: Delivery) -> None:
        delivery.ack()
        delivery.ack()
        delivery.reject("after ack: ignored")
        settled.put(delivery.settled)

    subscription = worker.consume("test.q", handler)
    server.publish(names.DEFAULT_EXCHANGE, "test.q", b"once", message_id="m-1")
    assert settled.get(timeout=TIMEOUT)
    subscription.cancel()

    server.publish(names.DEAD_LETTER_EXCHANGE, "test.q", b"dlq marker")
    assert first_delivery(server, names.DEAD_LETTER_QUEUE).body == b"dlq marker"
    server.publish(names.DEFAULT_EXCHANGE, "test.q", b"marker")
    assert first_delivery(broker.connect(), "test.q").body == b"marker"


def test_consumers_of_one_queue_get_distinct_messages(broker: BrokerHarness) -> None:
    # prefetch=1 and handlers that wait until both consumers hold a message: the broker has to share.
    options = broker.options(prefetch=1)
    publisher = broker.connect()
    publisher.declare(plain_queues("test.shared"))
    lock = threading.Lock()
    received: dict[str, list[str]] = {"a": [], "b": []}
    both_busy = threading.Event()
    done: queue.Queue[str] = queue.Queue()

    def consumer(name: str) -> Any:
        def handler(delivery: Delivery) -> None:
            with lock:
                received[name].append(delivery.message_id or "")
                if all(received.values()):
                    both_busy.set()
            both_busy.wait(TIMEOUT)
            delivery.ack()
            done.put(delivery.message_id or "")

        return handler

    broker.connect(options).consume("test.shared", consumer("a"))
    broker.connect(options).consume("test.shared", consumer("b"))
    sent = [f"m-{i}" for i in range(10)]
    for message_id in sent:
        publisher.publish(names.DEFAULT_EXCHANGE, "test.shared", b"work", message_id=message_id)

    assert sorted(done.get(timeout=TIMEOUT) for _ in sent) == sorted(sent)
    assert received["a"] and received["b"]
    assert sorted(received["a"] + received["b"]) == sorted(sent)  # nothing delivered twice


def test_long_handler_survives_short_heartbeat(broker: BrokerHarness) -> None:
    worker = broker.connect(broker.options(heartbeat=2))
    worker.declare(plain_queues("test.q"))
    finished = threading.Event()
    seen: queue.Queue[Delivery] = queue.Queue()

    def handler(delivery: Delivery) -> None:
        seen.put(delivery)
        if delivery.message_id == "long":
            time.sleep(8)  # the work: longer than the 2-3 heartbeat intervals a blocked connection lives
        delivery.ack()
        if delivery.message_id == "long":
            finished.set()

    worker.consume("test.q", handler)
    worker.publish(names.DEFAULT_EXCHANGE, "test.q", b"slow work", message_id="long")
    assert finished.wait(TIMEOUT)
    worker.publish(names.DEFAULT_EXCHANGE, "test.q", b"next", message_id="next")

    first = seen.get(timeout=TIMEOUT)
    assert (first.message_id, first.redelivered) == ("long", False)
    following = seen.get(timeout=TIMEOUT)  # a dropped connection would have redelivered "long" first
    assert (following.message_id, following.redelivered) == ("next", False)


def test_private_queue_follows_the_event_stream(broker):
    from fl_broker.wire import names as n

    server = broker.connect()
    server.declare(n.server_topology())
    watcher = broker.connect()
    queue_name = watcher.private_queue(((n.EVENT_EXCHANGE, "run.1.#"),))
    got: queue.Queue = queue.Queue()

    def take(delivery):
        got.put(delivery.routing_key)
        delivery.ack()

    watcher.consume(queue_name, take)
    server.publish(n.EVENT_EXCHANGE, "run.2.round.0.done", b"other run")
    server.publish(n.EVENT_EXCHANGE, "run.1.round.0.done", b"ours")
    assert got.get(timeout=10) == "run.1.round.0.done"
    watcher.close()
    # the queue is gone with its owner: an event now reaches only the history queue
    server.publish(n.EVENT_EXCHANGE, "run.1.round.1.done", b"after")


def test_bcc_header_routes_one_publish_to_several_sites_and_is_stripped(broker):
    publisher = broker.connect()
    publisher.declare(names.server_topology())
    for site in ("site-1", "site-2", "site-3"):
        publisher.declare(names.site_topology(site))
    publisher.publish(names.TASK_EXCHANGE, "site-1", b"task", headers={"BCC": ["site-3"]})
    publisher.publish(names.TASK_EXCHANGE, "site-2", b"marker")
    consumer = broker.connect()
    got: queue.Queue = queue.Queue()

    def take(delivery):
        got.put((delivery.routing_key, delivery.body, dict(delivery.headers)))
        delivery.ack()

    for site in ("site-1", "site-2", "site-3"):
        consumer.consume(names.task_queue(site), take)
    received = sorted(got.get(timeout=10) for _ in range(3))
    assert [(key, body) for key, body, _ in received] == [
        ("site-1", b"task"),
        ("site-1", b"task"),
        ("site-2", b"marker"),
    ]
    assert all("BCC" not in headers for _, _, headers in received)


def test_an_expired_message_is_dead_lettered_not_delivered(broker):
    server = broker.connect()
    server.declare(names.server_topology())
    server.publish(names.CONTROL_EXCHANGE, names.SERVER, b"stale request", expiration=0.2)
    server.publish(names.CONTROL_EXCHANGE, names.SERVER, b"fresh request", expiration=60)
    time.sleep(0.6)
    got: queue.Queue = queue.Queue()

    def take(delivery):
        got.put(delivery.body)
        delivery.ack()

    server.consume(names.SERVER_CONTROL_QUEUE, take)
    assert got.get(timeout=10) == b"fresh request"
    dead: queue.Queue = queue.Queue()

    def take_dead(delivery):
        dead.put(delivery.body)
        delivery.ack()

    server.consume(names.DEAD_LETTER_QUEUE, take_dead)
    assert dead.get(timeout=10) == b"stale request"
    assert got.empty()


def test_consumer_count_asks_without_disturbing_deliveries_in_flight(broker: BrokerHarness) -> None:
    transport, asker = broker.connect(), broker.connect()
    transport.declare(plain_queues("test.q"))
    assert asker.consumer_count("test.q") == 0
    assert asker.consumer_count("test.no-such-queue") == 0  # a missing queue is not an error, nor created
    transport.publish(names.DEFAULT_EXCHANGE, "test.q", b"held", message_id="held")
    held = Collector()
    subscription = transport.consume("test.q", held)
    delivery = held.get()
    assert asker.consumer_count("test.q") == 1
    assert transport.consumer_count("test.no-such-queue") == 0  # on the consuming connection itself
    delivery.ack()  # still settles: asking about a missing queue did not replace the channel
    subscription.cancel()
    assert asker.consumer_count("test.q") == 0
    transport.publish(names.DEFAULT_EXCHANGE, "test.q", b"marker", message_id="marker")
    assert first_delivery(transport, "test.q").message_id == "marker"  # "held" was acked, not redelivered
    with pytest.raises(PublishFailed):
        transport.publish(names.DEFAULT_EXCHANGE, "test.no-such-queue", b"x")  # the passive declare made nothing


def test_an_unconfirmed_publish_is_delivered_in_order_and_an_unroutable_one_is_dropped(broker: BrokerHarness) -> None:
    transport = broker.connect()
    transport.declare(plain_queues("test.q"))
    for i in range(20):
        transport.publish(names.DEFAULT_EXCHANGE, "test.q", str(i).encode(), headers={"i": i}, confirm=False)
    transport.publish(names.DEFAULT_EXCHANGE, "test.no-such-queue", b"nobody listens", confirm=False)  # no error
    transport.publish(names.DEFAULT_EXCHANGE, "test.q", b"marker")  # confirmed: the unconfirmed went first
    got = Collector(ack=True)
    transport.consume("test.q", got)
    bodies = [got.get() for _ in range(21)]
    assert [d.body for d in bodies] == [str(i).encode() for i in range(20)] + [b"marker"]
    assert bodies[3].headers == {"i": 3} and bodies[3].user_id == broker.login


def test_publishes_in_a_batch_are_delivered_in_order_a_confirmed_one_among_them_included(broker: BrokerHarness) -> None:
    transport = broker.connect()
    transport.declare(plain_queues("test.q"))
    with transport.batch():
        for i in range(10):
            transport.publish(names.DEFAULT_EXCHANGE, "test.q", f"a{i}".encode(), confirm=False)
        transport.publish(names.DEFAULT_EXCHANGE, "test.q", b"confirmed")  # goes out at once, after those
        with transport.batch():  # nested: the outer block hands them over
            for i in range(10):
                transport.publish(names.DEFAULT_EXCHANGE, "test.q", f"b{i}".encode(), confirm=False)
    # nothing published after the block: the ones in it reach the broker without anything following them
    got = Collector(ack=True)
    transport.consume("test.q", got)
    bodies = [got.get().body for _ in range(21)]
    assert bodies == [f"a{i}".encode() for i in range(10)] + [b"confirmed"] + [f"b{i}".encode() for i in range(10)]
