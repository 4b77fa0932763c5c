"""A node that takes the TCP connection but never speaks AMQP (paused, hung) is a failed connection attempt:
retried with backoff, then given up on after `connect_attempts`. pika raises its connector's own timeout for it
(AMQPConnectorStackTimeout, no AMQPError), which used to end the transport's I/O thread instead ("I/O thread
crashed"): a program reconnecting to a paused node was left with a dead transport. No broker needed."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pika.connection
import pytest

from fl_broker.errors import ConnectionLost
from fl_broker.transport import TransportOptions
from fl_broker.transport.rabbitmq import RabbitMQTransport


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener never accepts: the kernel completes the handshake, nothing ever answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_a_node_that_never_answers_is_retried_then_given_up_on(silent_port, monkeypatch, caplog):
    monkeypatch.setattr(pika.connection.Parameters, "DEFAULT_STACK_TIMEOUT", 0.5)  # pika's 15 s, shortened
    options = TransportOptions(connect_attempts=2, backoff_initial=0.05, backoff_max=0.1)
    with pytest.raises(ConnectionLost, match="after 2 attempts"):
        RabbitMQTransport(f"amqp://guest:guest@127.0.0.1:{silent_port}/", options=options)
    assert "I/O thread crashed" not in caplog.text
