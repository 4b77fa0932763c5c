"""RabbitMQ-specific behaviour of RabbitMQTransport, against the suite's real node (no mocks)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fl_broker.errors import AuthenticationFailed, MessageTooLarge, PublishFailed, TransportError
from fl_broker.transport import Delivery, TransportOptions, chunking
from fl_broker.transport.rabbitmq import RabbitMQTransport, safe_url
from fl_broker.wire import names
from fl_broker.wire.names import ExchangeSpec, QueueSpec, Topology

pytestmark = pytest.mark.rabbitmq

OPTIONS = TransportOptions(connect_attempts=20, backoff_initial=0.2, backoff_max=1.0, publish_timeout=30.0)
REPO = Path(__file__).resolve().parents[2]
WORK = "fl.test.work"
WORK_EXCHANGE = "fl.test"


def _topology() -> Topology:
    """A work queue that dead-letters into fl.dlx, plus the server's dead-letter queue."""
    dlq = next(q for q in names.server_topology().queues if q.name == names.DEAD_LETTER_QUEUE)
    return Topology(
        exchanges=(ExchangeSpec(WORK_EXCHANGE, "direct"), ExchangeSpec(names.DEAD_LETTER_EXCHANGE, "fanout")),
        queues=(
            QueueSpec(WORK, ((WORK_EXCHANGE, "work"),), {"x-dead-letter-exchange": names.DEAD_LETTER_EXCHANGE}),
            dlq,
        ),
    )


def _vhost(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path[1:])


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Collector:
    """A handler that records deliveries and optionally acks them."""

    def __init__(self, *, ack: bool = True, work: float = 0.0) -> None:
        self.deliveries: list[Delivery] = []
        self.ack = ack
        self.work = work

    def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        if self.work:
            time.sleep(self.work)
        if self.ack:
            delivery.ack()


@pytest.fixture
def connect(rabbitmq_url: str) -> Iterator[Callable[..., RabbitMQTransport]]:
    """Open transports on this test's vhost (closed at teardown); keyword args change OPTIONS."""
    opened: list[RabbitMQTransport] = []

    def _connect(**changes: Any) -> RabbitMQTransport:
        transport = RabbitMQTransport(rabbitmq_url, options=dataclasses.replace(OPTIONS, **changes))
        transport.declare(_topology())
        opened.append(transport)
        return transport

    yield _connect
    for transport in opened:
        transport.close()


def test_user_id_is_the_login(connect: Callable[..., RabbitMQTransport]) -> None:
    transport = connect()
    got = Collector()
    transport.consume(WORK, got)
    transport.publish(WORK_EXCHANGE, "work", b"hi", correlation_id="c1", headers={"k": "v"})
    wait_for(lambda: got.deliveries, what="delivery")
    delivery = got.deliveries[0]
    assert transport.user == "guest"
    assert delivery.user_id == "guest"
    assert delivery.content_type == names.CONTENT_TYPE
    assert delivery.correlation_id == "c1" and delivery.message_id and delivery.timestamp
    assert delivery.headers == {"k": "v"}


def test_bad_credentials_fail_fast(rabbitmq_url: str) -> None:
    bad = rabbitmq_url.replace("guest:guest@", "guest:wrong@")
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed) as info:
        RabbitMQTransport(bad, options=OPTIONS)
    assert time.monotonic() - started < 5
    assert "wrong" not in str(info.value)


def test_safe_url_strips_password() -> None:
    assert safe_url("amqp://bob:s3cret@host:5672/%2Ffl") == "amqp://bob:***@host:5672/%2Ffl"


def test_body_over_max_body_size_is_refused(connect: Callable[..., RabbitMQTransport]) -> None:
    transport = connect(max_body_size=1024, chunk_size=256)
    with pytest.raises(MessageTooLarge):
        transport.publish(WORK_EXCHANGE, "work", b"x" * 1025)


@pytest.mark.slow
def test_300_mib_array_round_trips_through_chunks(connect: Callable[..., RabbitMQTransport]) -> None:
    array = np.random.default_rng(0).random(300 * 1024 * 1024 // 4, dtype=np.float32)
    publisher, consumer = connect(), connect()
    got = Collector()
    consumer.consume(WORK, got)
    publisher.publish(WORK_EXCHANGE, "work", array.tobytes(), headers={"dtype": "float32"})
    wait_for(lambda: got.deliveries, timeout=120, what="300 MiB delivery")
    delivery = got.deliveries[0]
    assert delivery.headers == {"dtype": "float32"}
    assert len(delivery.body) == array.nbytes
    received = np.frombuffer(delivery.body, dtype=np.float32)
    assert np.array_equal(received, array)
    assert isinstance(delivery.body, bytearray)  # writable, for zero-copy numpy views


def test_handler_blocking_for_several_heartbeats_keeps_the_connection(
    connect: Callable[..., RabbitMQTransport],
) -> None:
    consumer = connect(heartbeat=2)
    generation = consumer.generation
    got = Collector(work=8.0)
    consumer.consume(WORK, got)
    connect().publish(WORK_EXCHANGE, "work", b"long task")
    wait_for(lambda: got.deliveries and got.deliveries[0].settled, timeout=20, what="ack")
    assert consumer.generation == generation, "the connection was replaced while the handler worked"
    consumer.close()
    again = Collector()
    connect().consume(WORK, again)
    time.sleep(1.5)
    assert len(got.deliveries) == 1 and not again.deliveries, "the message was acked exactly once"


def test_reconnect_after_broker_drops_connections(
    connect: Callable[..., RabbitMQTransport], rabbitmq_node: Any, rabbitmq_url: str
) -> None:
    consumer, publisher = connect(), connect()
    got = Collector(ack=False)
    consumer.consume(WORK, got)
    publisher.publish(WORK_EXCHANGE, "work", b"first")
    wait_for(lambda: got.deliveries, what="first delivery")
    assert rabbitmq_node.close_connections(_vhost(rabbitmq_url), expect=2) >= 2
    wait_for(lambda: len(got.deliveries) >= 2, timeout=20, what="redelivery after reconnect")
    stale, again = got.deliveries[0], got.deliveries[1]
    assert again.body == b"first" and again.redelivered
    stale.ack()  # a tag of the old connection: must be a no-op, not an error
    again.ack()
    publisher.publish(WORK_EXCHANGE, "work", b"second")  # the publisher reconnected too
    wait_for(lambda: any(d.body == b"second" for d in got.deliveries), what="delivery after reconnect")


_CONSUMER_SCRIPT = """
import sys, time
from fl_broker.transport.base import TransportOptions
from fl_broker.transport.rabbitmq import RabbitMQTransport
t = RabbitMQTransport(sys.argv[1], options=TransportOptions(connect_attempts=5))
def handler(delivery):
    print("got", delivery.body.decode(), flush=True)
    time.sleep(3600)  # never acks
t.consume(sys.argv[2], handler)
time.sleep(3600)
"""


def test_killed_consumer_process_message_is_redelivered(
    connect: Callable[..., RabbitMQTransport], rabbitmq_url: str
) -> None:
    connect()  # declares the topology
    proc = subprocess.Popen(
        [sys.executable, "-c", _CONSUMER_SCRIPT, rabbitmq_url, WORK],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        connect().publish(WORK_EXCHANGE, "work", b"task-1")
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "got task-1"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    got = Collector()
    connect().consume(WORK, got)
    wait_for(lambda: got.deliveries, timeout=20, what="redelivery to another consumer")
    assert got.deliveries[0].body == b"task-1" and got.deliveries[0].redelivered


def test_malformed_chunk_stream_is_dead_lettered_with_reason(
    connect: Callable[..., RabbitMQTransport], rabbitmq_node: Any, rabbitmq_url: str
) -> None:
    transport = connect()
    got = Collector()
    transport.consume(WORK, got)
    bad = {chunking.STREAM_HEADER: "s1", chunking.INDEX_HEADER: 1, chunking.COUNT_HEADER: 2, chunking.TOTAL_HEADER: 4}
    transport.publish(WORK_EXCHANGE, "work", b"ab", headers=bad)
    dead = Collector()
    transport.consume(names.DEAD_LETTER_QUEUE, dead)
    wait_for(lambda: dead.deliveries, what="dead letter")
    headers = dead.deliveries[0].headers
    assert "chunk 0 missing" in headers[names.REJECT_REASON_HEADER]
    assert headers[names.REJECT_QUEUE_HEADER] == WORK
    assert headers["x-fl-original-chunk-index"] == 1
    assert dead.deliveries[0].body == b"ab"
    assert not got.deliveries, "a malformed message must never reach the handler"


def test_reject_of_a_chunked_message_keeps_body_and_reason(connect: Callable[..., RabbitMQTransport]) -> None:
    transport = connect(chunk_size=1000)
    body = bytes(range(256)) * 20
    transport.consume(WORK, lambda d: d.reject("bad round"))
    dead = Collector()
    transport.consume(names.DEAD_LETTER_QUEUE, dead)
    transport.publish(WORK_EXCHANGE, "work", body, headers={"round": 3})
    wait_for(lambda: dead.deliveries, what="dead letter")
    delivery = dead.deliveries[0]
    assert delivery.body == body
    assert delivery.headers[names.REJECT_REASON_HEADER] == "bad round"
    assert delivery.headers["round"] == 3


def test_pika_private_socket_read_size_is_still_there() -> None:
    """Guard: rabbitmq.py raises pika's private receive size (about 2x throughput). If this fails, pika
    renamed or dropped `_AsyncTransportBase._MAX_RECV_BYTES`: find the new knob or accept the slowdown."""
    from pika.adapters.utils import io_services_utils

    assert hasattr(io_services_utils, "_AsyncTransportBase")
    assert io_services_utils._AsyncTransportBase._MAX_RECV_BYTES >= 256 * 1024


def test_publish_during_broker_restart_waits_and_consuming_resumes(
    connect: Callable[..., RabbitMQTransport], rabbitmq_node: Any
) -> None:
    consumer, publisher = connect(), connect()
    got = Collector()
    consumer.consume(WORK, got)
    rabbitmq_node.stop_app()
    outcome: list[BaseException | None] = []

    def publish() -> None:
        try:
            publisher.publish(WORK_EXCHANGE, "work", b"during outage")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=publish)
    try:
        thread.start()
        time.sleep(1.0)
        assert not outcome, "publish must wait for the broker to come back"
    finally:
        rabbitmq_node.start_app()
    thread.join(timeout=30)
    assert outcome == [None]
    wait_for(lambda: any(d.body == b"during outage" for d in got.deliveries), timeout=30, what="delivery")


def test_a_broker_restart_loses_non_persistent_messages_only_and_interruptions_count_it(
    connect: Callable[..., RabbitMQTransport], rabbitmq_node: Any
) -> None:
    publisher = connect(chunk_size=64 * 1024)
    publisher.publish(WORK_EXCHANGE, "work", b"kept")
    publisher.publish(WORK_EXCHANGE, "work", b"made again by its sender", persistent=False)
    publisher.publish(WORK_EXCHANGE, "work", bytes(300_000), persistent=False)  # 5 chunks, none persistent
    publisher.publish(WORK_EXCHANGE, "work", bytes(200_000))  # chunked and persistent: kept whole
    assert publisher.interruptions == 0
    rabbitmq_node.stop_app()
    rabbitmq_node.start_app()
    wait_for(lambda: publisher.interruptions >= 1, timeout=30, what="the publisher noticing the restart")
    got = Collector()
    connect().consume(WORK, got)
    wait_for(lambda: len(got.deliveries) >= 2, timeout=30, what="the persistent messages")
    time.sleep(1.0)  # anything else would have come by now
    assert [bytes(d.body) for d in got.deliveries] == [b"kept", bytes(200_000)]


def test_channel_errors_surface_from_the_call_and_the_transport_carries_on(
    connect: Callable[..., RabbitMQTransport],
) -> None:
    transport = connect()
    got = Collector()
    transport.consume(WORK, got)
    with pytest.raises(TransportError, match="NOT_FOUND"):
        transport.consume("no.such.queue", Collector())
    with pytest.raises(PublishFailed, match="NOT_FOUND"):
        transport.publish("no.such.exchange", "x", b"lost")
    transport.publish(WORK_EXCHANGE, "work", b"still fine")  # the existing subscription was resumed
    wait_for(lambda: got.deliveries, what="delivery after channel errors")


def test_subscription_to_a_deleted_queue_ends_but_the_transport_reconnects(
    connect: Callable[..., RabbitMQTransport], rabbitmq_node: Any, rabbitmq_url: str
) -> None:
    declarer = connect()
    declarer.declare(Topology((), (QueueSpec("fl.test.doomed"),)))
    declarer.close()  # so nobody declares the queue again after the reconnect
    transport = connect()
    transport.consume("fl.test.doomed", Collector())
    vhost = urllib.parse.quote(_vhost(rabbitmq_url), safe="")
    rabbitmq_node.api("DELETE", f"/api/queues/{vhost}/fl.test.doomed")
    rabbitmq_node.close_connections(_vhost(rabbitmq_url))
    got = Collector()
    transport.consume(WORK, got)
    transport.publish(WORK_EXCHANGE, "work", b"after")
    wait_for(lambda: got.deliveries, timeout=20, what="delivery after reconnect")


def test_resent_chunk_stream_supersedes_the_partial_one(connect: Callable[..., RabbitMQTransport]) -> None:
    transport = connect(chunk_size=4)
    partial = {
        chunking.STREAM_HEADER: "old",
        chunking.INDEX_HEADER: 0,
        chunking.COUNT_HEADER: 3,
        chunking.TOTAL_HEADER: 10,
    }
    transport.publish(WORK_EXCHANGE, "work", b"0123", message_id="m-1", headers=partial)  # then the link broke
    transport.publish(WORK_EXCHANGE, "work", b"0123456789", message_id="m-1")  # the publisher's retry
    got = Collector()
    consumer = connect()
    consumer.consume(WORK, got)
    wait_for(lambda: got.deliveries, what="delivery")
    assert got.deliveries[0].body == b"0123456789"
    consumer.close()
    again = Collector()
    connect().consume(WORK, again)
    time.sleep(1.0)
    assert len(got.deliveries) == 1 and not again.deliveries, "the stale chunk must have been acked"


def test_chunks_go_out_with_several_confirms_in_flight_and_arrive_in_order(
    connect: Callable[..., RabbitMQTransport],
) -> None:
    from fl_broker.transport.rabbitmq import publisher as publisher_module

    publisher, consumer = connect(chunk_size=4096), connect(chunk_size=4096)
    in_flight: list[int] = []
    sent = publisher_module.Confirms.sent

    def counting_sent(self: publisher_module.Confirms) -> None:
        sent(self)
        in_flight.append(len(self.outstanding))

    body = os.urandom(4096 * 40 + 17)  # 41 chunks, ten times the window
    got = Collector()
    consumer.consume(WORK, got)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(publisher_module.Confirms, "sent", counting_sent)
        publisher.publish(WORK_EXCHANGE, "work", body)
    assert len(in_flight) == 41 and max(in_flight) <= publisher_module.CONFIRM_WINDOW
    wait_for(lambda: got.deliveries, what="the chunked body")
    assert bytes(got.deliveries[0].body) == body


def test_an_unroutable_chunked_body_is_refused_and_the_next_publish_works(
    connect: Callable[..., RabbitMQTransport],
) -> None:
    transport = connect(chunk_size=1024)
    got = Collector()
    transport.consume(WORK, got)
    with pytest.raises(PublishFailed, match="unroutable|no queue|NO_ROUTE"):
        transport.publish(WORK_EXCHANGE, "no-such-key", os.urandom(1024 * 20))
    transport.publish(WORK_EXCHANGE, "work", b"x" * 5000)  # a new send starts with a clean slate
    wait_for(lambda: got.deliveries, what="delivery after the refusal")
    assert bytes(got.deliveries[0].body) == b"x" * 5000
