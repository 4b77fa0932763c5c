"""Settling a RabbitMQ delivery is posted to the I/O thread, not waited for: the settling thread goes on at
once, and the settlement still reaches the broker, also when the transport is closed right after it."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fl_broker.transport import Delivery, TransportOptions
from fl_broker.transport.rabbitmq import RabbitMQTransport
from fl_broker.wire.names import ExchangeSpec, QueueSpec, Topology

pytestmark = pytest.mark.rabbitmq

OPTIONS = TransportOptions(connect_attempts=20, backoff_initial=0.2, backoff_max=1.0, publish_timeout=30.0)
QUEUE, EXCHANGE = "fl.test.settle", "fl.test.settle"
TOPOLOGY = Topology(exchanges=(ExchangeSpec(EXCHANGE, "direct"),), queues=(QueueSpec(QUEUE, ((EXCHANGE, "k"),)),))


@pytest.fixture
def connect(rabbitmq_url: str) -> Iterator[Callable[..., RabbitMQTransport]]:
    opened: list[RabbitMQTransport] = []

    def _connect(**changes: Any) -> RabbitMQTransport:
        transport = RabbitMQTransport(rabbitmq_url, options=dataclasses.replace(OPTIONS, **changes))
        transport.declare(TOPOLOGY)
        opened.append(transport)
        return transport

    yield _connect
    for transport in opened:
        transport.close()


def redelivered_within(connect: Callable[..., RabbitMQTransport], seconds: float) -> list[bytes]:
    """What a fresh consumer of the queue gets within `seconds` (left unacked, so nothing is lost)."""
    got: list[bytes] = []
    transport = connect()
    transport.consume(QUEUE, lambda delivery: got.append(bytes(delivery.body)))
    time.sleep(seconds)
    transport.close()
    return got


def test_an_ack_returns_before_the_io_thread_has_sent_it_and_still_takes_effect(
    connect: Callable[..., RabbitMQTransport],
) -> None:
    transport = connect()
    transport.publish(EXCHANGE, "k", b"task")
    acked = threading.Event()
    took: list[float] = []

    def handler(delivery: Delivery) -> None:
        transport.post(lambda ch: time.sleep(0.6), what="keep the I/O thread busy")
        started = time.monotonic()
        delivery.ack()
        took.append(time.monotonic() - started)
        acked.set()

    transport.consume(QUEUE, handler)
    assert acked.wait(15)
    assert took[0] < 0.3  # it did not wait behind the 0.6 s operation on the I/O thread
    time.sleep(1.0)  # the ack goes out once that operation is done
    transport.close()
    assert redelivered_within(connect, 1.0) == []


def test_acks_made_just_before_close_reach_the_broker(connect: Callable[..., RabbitMQTransport]) -> None:
    publisher = connect()
    for i in range(50):
        publisher.publish(EXCHANGE, "k", str(i).encode())
    consumer = connect()
    seen: list[bytes] = []
    all_acked = threading.Event()

    def handler(delivery: Delivery) -> None:
        seen.append(bytes(delivery.body))
        delivery.ack()
        if len(seen) == 50:
            all_acked.set()

    consumer.consume(QUEUE, handler)
    assert all_acked.wait(30)
    consumer.close()  # at once: the acks posted last are still queued for the I/O thread
    assert sorted(seen, key=int) == [str(i).encode() for i in range(50)]
    assert redelivered_within(connect, 1.0) == []  # close() sent them all before the connection went


def test_a_release_is_posted_too_and_the_message_comes_back(connect: Callable[..., RabbitMQTransport]) -> None:
    transport = connect()
    transport.publish(EXCHANGE, "k", b"again")
    got: list[tuple[bytes, bool]] = []
    second = threading.Event()

    def handler(delivery: Delivery) -> None:
        got.append((bytes(delivery.body), delivery.redelivered))
        if len(got) == 1:
            delivery.release()
        else:
            delivery.ack()
            second.set()

    transport.consume(QUEUE, handler)
    assert second.wait(15)
    assert got == [(b"again", False), (b"again", True)]


def test_an_unconfirmed_publish_the_broker_refuses_costs_no_delivery_in_flight(
    connect: Callable[..., RabbitMQTransport],
) -> None:
    transport = connect()
    transport.publish(EXCHANGE, "k", b"held")
    held: list[Delivery] = []
    transport.consume(QUEUE, held.append)
    deadline = time.monotonic() + 15
    while not held and time.monotonic() < deadline:
        time.sleep(0.02)
    assert held
    # 404: the broker closes the channel this went out on, which is the unconfirmed publishing channel only
    transport.publish("fl.test.no-such-exchange", "k", b"lost", confirm=False)
    time.sleep(0.5)
    transport.publish(EXCHANGE, "k", b"next", confirm=False)  # on a new channel
    held[0].ack()  # the consuming channel was not replaced: this ack counts
    deadline = time.monotonic() + 15
    while len(held) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [bytes(d.body) for d in held] == [b"held", b"next"] and not held[1].redelivered
    held[1].ack()
    time.sleep(0.5)
    transport.close()
    assert redelivered_within(connect, 1.0) == []
