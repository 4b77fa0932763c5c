"""Broker-enforced limits of a provisioned federation, checked on a real node loaded with `fl-broker provision`'s
definitions: the dead-letter queue stays bounded and counts what it drops; per-login and per-vhost limits hold."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest

from fl_broker.ops import provision
from fl_broker.wire import names

pytestmark = pytest.mark.rabbitmq

MiB = 1024 * 1024


def _wait(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 30.0) -> Any:
    """Poll `read()` until `done(value)` (the management API's queue counts lag the broker by seconds)."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.5)
        value = read()
    return value


def _connection(url: str) -> pika.BlockingConnection:
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    return pika.BlockingConnection(params)


def _depths(provisioned) -> tuple[int, int]:
    vhost = provisioned.plan.vhost
    main = provisioned.node.queue(vhost, names.DEAD_LETTER_QUEUE)
    dropped = provisioned.node.queue(vhost, names.DROPPED_QUEUE)
    return main.get("messages", -1), dropped.get("messages", -1)


def _publish_dead_letters(url: str, bodies: Any) -> None:
    """Publish into fl.dlx as the server (which dead-letters what it rejects), the last one confirmed."""
    connection = _connection(url)
    try:
        channel = connection.channel()
        for body in bodies:
            channel.basic_publish(names.DEAD_LETTER_EXCHANGE, "", body, pika.BasicProperties(delivery_mode=2))
        channel.confirm_delivery()  # waits for everything before it: the broker has routed all of them
        channel.basic_publish(names.DEAD_LETTER_EXCHANGE, "", b"last", pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()


def test_dead_letter_queue_drops_the_oldest_and_counts_the_drops(provisioned):
    extra = 5
    total = names.DEAD_LETTER_MAX_LENGTH + extra  # "last" included
    _publish_dead_letters(provisioned.url("server"), (b"%d" % i for i in range(total - 1)))
    depths = _wait(lambda: _depths(provisioned), lambda d: d == (names.DEAD_LETTER_MAX_LENGTH, extra))
    assert depths == (names.DEAD_LETTER_MAX_LENGTH, extra)
    vhost = provisioned.plan.vhost
    [head] = provisioned.node.get_messages(vhost, names.DEAD_LETTER_QUEUE, 1)
    assert head["payload"] == str(extra)  # 0 .. extra-1 were the oldest: dropped
    dropped = provisioned.node.get_messages(vhost, names.DROPPED_QUEUE, extra)
    assert [m["payload"] for m in dropped] == [str(i) for i in range(extra)]
    death = dropped[0]["properties"]["headers"]["x-death"][0]
    assert death["queue"] == names.DEAD_LETTER_QUEUE and death["reason"] == "maxlen"


@pytest.mark.slow
def test_dead_letter_queue_is_bounded_in_bytes(provisioned):
    size = 20 * MiB
    count = names.DEAD_LETTER_MAX_BYTES // size + 1  # one more than fits
    _publish_dead_letters(provisioned.url("server"), (bytes([i]) * size for i in range(count)))
    vhost = provisioned.plan.vhost

    def state() -> tuple[int, int, int]:
        main = provisioned.node.queue(vhost, names.DEAD_LETTER_QUEUE)
        return main.get("message_bytes", -1), *_depths(provisioned)

    main_bytes, depth, dropped = _wait(state, lambda s: s[1:] == (count, 1))
    assert (depth, dropped) == (count, 1)  # the oldest big one made room; the other big ones and b"last" stay
    assert main_bytes <= names.DEAD_LETTER_MAX_BYTES
    [first] = provisioned.node.get_messages(vhost, names.DROPPED_QUEUE, 1)
    assert first["payload_bytes"] == size


def test_an_existing_unbounded_dead_letter_queue_is_bounded_by_the_policy(rabbitmq_node, tmp_path):
    """A deployment made before the limits: its fl.dead-letters has no arguments; loading the new definitions
    bounds it without redeclaring it (queue arguments would fail with 406 PRECONDITION_FAILED)."""
    vhost = f"old-{tmp_path.name[-12:]}"
    url = rabbitmq_node.create_vhost(vhost)
    try:
        connection = _connection(url)
        channel = connection.channel()
        channel.exchange_declare(names.DEAD_LETTER_EXCHANGE, "fanout", durable=True)
        channel.queue_declare(names.DEAD_LETTER_QUEUE, durable=True)  # as 0.1 declared it
        channel.queue_bind(names.DEAD_LETTER_QUEUE, names.DEAD_LETTER_EXCHANGE)
        connection.close()
        defs = provision.topology_definitions(vhost, ["site-1"])
        rabbitmq_node.api("POST", "/api/definitions", defs)
        queue = _wait(
            lambda: rabbitmq_node.queue(vhost, names.DEAD_LETTER_QUEUE),
            lambda q: q.get("effective_policy_definition"),
        )
        assert queue["arguments"] == {}
        effective = queue["effective_policy_definition"]
        assert effective["max-length"] == names.DEAD_LETTER_MAX_LENGTH
        assert effective["max-length-bytes"] == names.DEAD_LETTER_MAX_BYTES
        assert effective["dead-letter-exchange"] == names.DROPPED_EXCHANGE
    finally:
        rabbitmq_node.delete_vhost(vhost)


def test_site_connections_and_channels_are_limited(provisioned):
    url = provisioned.url("site-1")
    allowed = provision.SITE_LIMITS["max-connections"]
    connections = [_connection(url) for _ in range(allowed)]
    try:
        with pytest.raises(pika.exceptions.AMQPConnectionError) as refused:
            connections.append(_connection(url))
        assert "connection limit" in repr(refused.value)
        for _ in range(provision.SITE_LIMITS["max-channels"]):
            connections[0].channel()
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            connections[0].channel()
        assert closed.value.reply_code == 530 and "channel" in closed.value.reply_text
    finally:
        for connection in connections:
            if connection.is_open:
                connection.close()


def test_vhost_queue_limit_stops_a_site_declaring_queues(provisioned):
    limits = provision.vhost_limits(provisioned.plan)
    vhost = provisioned.plan.vhost
    rows = provisioned.node.api("GET", f"/api/vhost-limits/{urllib.parse.quote(vhost, safe='')}")
    assert rows and rows[0]["value"] == limits
    connection = _connection(provisioned.url("site-1"))
    channel = connection.channel()
    existing = len(provisioned.node.api("GET", f"/api/queues/{urllib.parse.quote(vhost, safe='')}"))
    try:
        for i in range(limits["max-queues"] - existing):
            channel.queue_declare(f"fl.private.site-1.q{i}", exclusive=True)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.queue_declare("fl.private.site-1.one-too-many", exclusive=True)
        assert "queue limit" in refused.value.reply_text
    finally:
        if connection.is_open:
            connection.close()


def test_a_private_node_gives_its_federation_vhost_the_policies(rabbitmq_node):
    if rabbitmq_node.node is None:
        pytest.skip("an external broker (FL_BROKER_URL) was not started by fl_broker.ops.localnode")
    found = {p["name"]: p["definition"] for p in rabbitmq_node.api("GET", "/api/policies/%2Ffl")}
    assert found == {p.name: p.definition for p in names.POLICIES}
