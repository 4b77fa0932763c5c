"""Several broker URLs on the suite's real node: a first node that refuses connections, and failover after a
lost connection (two names of the one node stand for two nodes; a real cluster is in tests/cluster/)."""

from __future__ import annotations

import logging
import threading
import urllib.parse

import pytest

from fl_broker.errors import ConnectionLost
from fl_broker.ops.localnode import free_port
from fl_broker.transport import TransportOptions, connect
from fl_broker.wire import names

pytestmark = pytest.mark.rabbitmq

QUEUE = names.Topology(exchanges=(), queues=(names.QueueSpec("test.urls"),))


def with_port(url: str, host: str, port: int) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=f"{parts.username}:{parts.password}@{host}:{port}").geturl()


def roundtrip(transport, body: bytes) -> None:
    got = threading.Event()

    def handler(delivery) -> None:
        if delivery.body == body:
            got.set()
        delivery.ack()

    sub = transport.consume("test.urls", handler)
    transport.publish("", "test.urls", body)
    assert got.wait(10)
    sub.cancel()


def test_a_first_url_that_refuses_connections_is_skipped_and_logged_by_host(rabbitmq_url, caplog):
    dead = with_port(rabbitmq_url, "127.0.0.1", free_port())
    caplog.set_level(logging.INFO, logger="fl_broker.transport")
    transport = connect(f"{dead},{rabbitmq_url}", options=TransportOptions(connect_attempts=2))
    try:
        transport.declare(QUEUE)
        roundtrip(transport, b"through the second node")
    finally:
        transport.close()
    dead_host = "amqp://127.0.0.1:" + str(urllib.parse.urlsplit(dead).port)
    assert any(f"cannot connect to {dead_host} (" in r.getMessage() and "next node" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    password = urllib.parse.urlsplit(rabbitmq_url).password
    assert all(f":{password}@" not in r.getMessage() for r in caplog.records)


def test_every_url_refusing_gives_up_after_the_attempts_naming_the_first(rabbitmq_url):
    dead = [with_port(rabbitmq_url, "127.0.0.1", free_port()) for _ in range(2)]
    with pytest.raises(
        ConnectionLost, match=r"cannot connect to amqp://guest:\*\*\*@127.0.0.1:.*\(\+1 more nodes\) after 2"
    ):
        connect(",".join(dead), options=TransportOptions(connect_attempts=2, backoff_initial=0.1))


def test_a_lost_connection_fails_over_to_the_next_node_and_consuming_goes_on(rabbitmq_node, rabbitmq_url, caplog):
    port = urllib.parse.urlsplit(rabbitmq_url).port
    assert port is not None
    first, second = with_port(rabbitmq_url, "127.0.0.1", port), with_port(rabbitmq_url, "localhost", port)
    caplog.set_level(logging.INFO, logger="fl_broker.transport")
    transport = connect(f"{first},{second}")
    try:
        transport.declare(QUEUE)
        roundtrip(transport, b"before")
        generation = transport.generation
        vhost = urllib.parse.unquote(urllib.parse.urlsplit(rabbitmq_url).path[1:])
        rabbitmq_node.close_connections(vhost)
        roundtrip(transport, b"after")  # publish waits for the reconnect
        assert transport.generation > generation
    finally:
        transport.close()
    assert f"failed over from node amqp://127.0.0.1:{port} to node amqp://localhost:{port}" in caplog.text
