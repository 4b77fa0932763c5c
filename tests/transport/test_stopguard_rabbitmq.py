"""A stopping RabbitMQ transport (begin_close) whose broker answers is never cut off: an idle spell longer than
the guard's grace, a chunked publish, a handler that works longer than the grace, then a proper close, with the
delivery acked. Against the suite's node. A send longer than the grace (bytes moving): test_stopguard.py; the
paused node: tests/reliability/test_sigterm_broker_gone.py."""

from __future__ import annotations

import logging
import queue
import socket
import time

import pytest

from fl_broker.transport import Delivery, TransportOptions
from fl_broker.transport.rabbitmq import RabbitMQTransport, stopguard
from fl_broker.wire.names import ExchangeSpec, QueueSpec, Topology

pytestmark = pytest.mark.rabbitmq

OPTIONS = TransportOptions(connect_attempts=20, backoff_initial=0.2, backoff_max=1.0, publish_timeout=30.0)
GRACE = 0.3
TOPOLOGY = Topology(
    exchanges=(ExchangeSpec("fl.test", "direct"),), queues=(QueueSpec("fl.test.guard", (("fl.test", "k"),)),)
)


def test_the_socket_stopguard_cuts_is_where_it_looks_for_it(rabbitmq_url):
    """Guard: stopguard shuts pika's private socket down (conn._impl._transport._sock). If this fails, pika
    moved it: a stopping program would wait for a paused broker's heartbeat timeout again."""
    transport = RabbitMQTransport(rabbitmq_url, options=OPTIONS)
    try:
        conn = transport.pika_connection
        assert conn is not None
        assert isinstance(stopguard.connection_socket(conn), socket.socket)
        before = stopguard._progress(conn)
        transport.declare(TOPOLOGY)
        after = stopguard._progress(conn)
        assert after[0] > before[0] and after[1] > before[1]  # both counts move with traffic
    finally:
        transport.close()


def test_a_stopping_transport_keeps_a_broker_that_answers(rabbitmq_url, monkeypatch, caplog):
    monkeypatch.setattr(stopguard, "GRACE_SECONDS", GRACE)
    caplog.set_level(logging.WARNING, logger=stopguard.__name__)
    transport = RabbitMQTransport(rabbitmq_url, options=OPTIONS)
    got: queue.Queue[Delivery] = queue.Queue()

    def slow_handler(delivery: Delivery) -> None:
        time.sleep(GRACE * 3)  # the I/O thread idles meanwhile: not a wait for the broker
        delivery.ack()
        got.put(delivery)

    try:
        transport.declare(TOPOLOGY)
        transport.consume("fl.test.guard", slow_handler)
        transport.begin_close()
        time.sleep(GRACE * 3)
        body = bytes(range(256)) * (64 * 1024)  # 16 MiB: 4 chunks, waiting for the broker's confirms
        transport.publish("fl.test", "k", body, persistent=False)
        assert got.get(timeout=60).body == body
    finally:
        transport.close()
    assert "dropping the connection" not in caplog.text
    again = RabbitMQTransport(rabbitmq_url, options=OPTIONS)
    try:
        redelivered: queue.Queue[Delivery] = queue.Queue()
        again.consume("fl.test.guard", redelivered.put)
        with pytest.raises(queue.Empty):  # it was acked before the close: nothing comes back
            redelivered.get(timeout=1.0)
    finally:
        again.close()
