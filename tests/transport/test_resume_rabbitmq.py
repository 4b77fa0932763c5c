"""A consumer that the broker cancels (here: its queue deleted under it, as when the queue's node is lost)
is consumed again once the queue is back, on the suite's real node; while it is not, the program says why."""

from __future__ import annotations

import logging
import queue
import time

import pytest

from fl_broker.transport import TransportOptions, connect
from fl_broker.transport.rabbitmq import resume
from fl_broker.wire import names

pytestmark = pytest.mark.rabbitmq

Q = "test.resume"
TOPOLOGY = names.Topology(exchanges=(), queues=(names.QueueSpec(Q),))


def collect(transport) -> queue.Queue[bytes]:
    received: queue.Queue[bytes] = queue.Queue()

    def handler(delivery) -> None:
        received.put(bytes(delivery.body))
        delivery.ack()

    transport.consume(Q, handler)
    return received


def delete_queue(url: str) -> None:
    other = connect(url)
    try:
        other.call(lambda ch: ch.queue_delete(Q), retry=False, what="delete")
    finally:
        other.close()


def publish_until_received(url: str, received: queue.Queue[bytes], body: bytes, timeout: float = 20) -> None:
    """Publish from another connection (declaring the queue there too) until the consumer has it."""
    other = connect(url)
    try:
        other.declare(TOPOLOGY)
        other.publish("", Q, body)
        assert received.get(timeout=timeout) == body
    finally:
        other.close()


def test_a_queue_deleted_and_declared_again_by_another_program_is_consumed_again(rabbitmq_url, caplog):
    caplog.set_level(logging.INFO, logger="fl_broker.transport")
    declarer = connect(rabbitmq_url)
    declarer.declare(TOPOLOGY)
    declarer.close()
    consumer = connect(rabbitmq_url)  # consumes a queue it did not declare
    try:
        received = collect(consumer)
        publish_until_received(rabbitmq_url, received, b"before")
        delete_queue(rabbitmq_url)
        time.sleep(1.5)
        publish_until_received(rabbitmq_url, received, b"after")
    finally:
        consumer.close()
    assert f"the broker cancelled the consumer of {Q}" in caplog.text
    assert f"consuming {Q} again" in caplog.text


def test_a_deleted_queue_of_its_own_topology_is_declared_again_and_consumed(rabbitmq_url):
    consumer = connect(rabbitmq_url)
    try:
        consumer.declare(TOPOLOGY)
        received = collect(consumer)
        delete_queue(rabbitmq_url)
        deadline = time.monotonic() + 15
        while consumer.consumer_count(Q) == 0:  # it declares the queue again and consumes it
            assert time.monotonic() < deadline, "the queue was not declared and consumed again"
            time.sleep(0.2)
        sender = connect(rabbitmq_url)
        sender.publish("", Q, b"to the declared-again queue")  # no declare here: the consumer's own
        sender.close()
        assert received.get(timeout=10) == b"to the declared-again queue"
    finally:
        consumer.close()


def test_while_the_queue_stays_away_the_reason_is_logged_as_an_error(rabbitmq_url, caplog, monkeypatch):
    monkeypatch.setattr(resume, "COMPLAIN_SECONDS", 0.5)
    caplog.set_level(logging.INFO, logger="fl_broker.transport")
    declarer = connect(rabbitmq_url)
    declarer.declare(TOPOLOGY)
    declarer.close()
    consumer = connect(rabbitmq_url, options=TransportOptions(predeclared=True))  # may not declare it
    try:
        received = collect(consumer)
        delete_queue(rabbitmq_url)
        deadline = time.monotonic() + 15
        while "still cannot consume" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text[-2000:]
            time.sleep(0.2)
        publish_until_received(rabbitmq_url, received, b"back")
    finally:
        consumer.close()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "still cannot consume" in r.getMessage()]
    assert errors and f"still cannot consume {Q} after" in errors[0].getMessage()
    assert "404 NOT_FOUND - no queue 'test.resume'" in errors[0].getMessage()
