"""Chunk streams on a real RabbitMQ node: no stream, complete or not, can stall a queue; spooled bodies
survive their consumer; dead-lettering never loops; a consumer that dies says so."""

from __future__ import annotations

import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from fl_broker.transport import chunking
from fl_broker.transport.rabbitmq import RabbitMQTransport
from fl_broker.transport.spool import SpoolOptions
from fl_broker.wire import names
from tests.transport.test_rabbitmq import OPTIONS, WORK, WORK_EXCHANGE, Collector, _vhost, connect, wait_for

pytestmark = pytest.mark.rabbitmq
__all__ = ["connect"]  # the fixture, shared with test_rabbitmq.py

Connect = Callable[..., RabbitMQTransport]


def forged_chunks(count: int, sent: int, size: int = 1) -> list[tuple[dict[str, Any], bytes]]:
    """The first `sent` chunks of a stream announcing `count` chunks of `size` bytes."""
    stream = uuid.uuid4().hex
    headers = {chunking.STREAM_HEADER: stream, chunking.COUNT_HEADER: count, chunking.TOTAL_HEADER: count * size}
    return [({**headers, chunking.INDEX_HEADER: i}, b"x" * size) for i in range(sent)]


def test_a_spooled_queue_completes_interleaved_uploads_far_beyond_its_prefetch(connect: Connect, tmp_path) -> None:
    # 12 senders x 40 chunks interleave in one queue; the consumer's prefetch is 8. Held unacked, the
    # window would fill with partial streams and nothing could complete (the deadlock of large runs).
    bodies = [os.urandom(40_000) for _ in range(12)]
    got = Collector()
    connect().consume(WORK, got, spool=SpoolOptions(tmp_path / "spool"))
    senders = [connect(chunk_size=1000, client_name=f"site-{i}") for i in range(len(bodies))]
    threads = [
        threading.Thread(target=s.publish, args=(WORK_EXCHANGE, "work", b))
        for s, b in zip(senders, bodies, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(lambda: len(got.deliveries) == len(bodies), timeout=60, what="every upload")
    assert sorted(bytes(d.body) for d in got.deliveries) == sorted(bodies)
    wait_for(lambda: not list((tmp_path / "spool").glob("*.data")), what="spool emptied after the acks")


def test_a_stream_that_never_completes_does_not_stall_a_spooled_queue(connect: Connect, tmp_path) -> None:
    transport = connect(chunk_size=1000)
    got = Collector()
    dead = Collector()
    transport.consume(names.DEAD_LETTER_QUEUE, dead)
    transport.consume(WORK, got, spool=SpoolOptions(tmp_path / "spool", stream_timeout=1.0))
    for headers, data in forged_chunks(count=300, sent=200):  # 200 bytes that would have stalled the server
        transport.publish(WORK_EXCHANGE, "work", data, headers=headers, message_id="forged")
    transport.publish(WORK_EXCHANGE, "work", b"r" * 5000, message_id="real")
    wait_for(lambda: got.deliveries, timeout=20, what="the real result")
    assert bytes(got.deliveries[0].body) == b"r" * 5000
    wait_for(lambda: dead.deliveries, timeout=20, what="the expired stream's notice")
    assert "expired: 200 of 300 chunks" in dead.deliveries[0].headers[names.REJECT_REASON_HEADER]
    assert dead.deliveries[0].message_id == "forged"


def test_an_incomplete_held_stream_expires_and_frees_the_prefetch_window(connect: Connect) -> None:
    transport = connect(chunk_size=1000, prefetch=4, stream_timeout=1.0)
    got, dead = Collector(), Collector()
    transport.consume(names.DEAD_LETTER_QUEUE, dead)
    transport.consume(WORK, got)
    for headers, data in forged_chunks(count=4, sent=3):  # 3 of the 4 prefetch slots, forever
        transport.publish(WORK_EXCHANGE, "work", data, headers=headers)
    transport.publish(WORK_EXCHANGE, "work", b"g" * 2500)  # 3 chunks: cannot fit until the forged one goes
    wait_for(lambda: got.deliveries, timeout=20, what="the good body after the expiry")
    assert got.deliveries[0].body == b"g" * 2500
    assert any("incomplete" in d.headers[names.REJECT_REASON_HEADER] for d in dead.deliveries)


def test_a_held_stream_that_can_never_fit_the_prefetch_is_refused_at_once(connect: Connect) -> None:
    transport = connect(chunk_size=100, prefetch=4)
    dead = Collector()
    transport.consume(names.DEAD_LETTER_QUEUE, dead)
    got = Collector()
    transport.consume(WORK, got)
    transport.publish(WORK_EXCHANGE, "work", b"z" * 1000)  # 10 chunks
    wait_for(lambda: dead.deliveries, what="the refusal")
    assert "can never fit this consumer's prefetch of 4" in dead.deliveries[0].headers[names.REJECT_REASON_HEADER]
    transport.publish(WORK_EXCHANGE, "work", b"small")
    wait_for(lambda: got.deliveries, what="the next message")


def test_a_spooled_body_left_unsettled_is_handed_over_again_by_the_next_consumer(connect: Connect, tmp_path) -> None:
    spool = SpoolOptions(tmp_path / "spool")
    first = connect(chunk_size=1000)
    kept = Collector(ack=False)
    first.consume(WORK, kept, spool=spool)
    first.publish(WORK_EXCHANGE, "work", b"k" * 9000, message_id="result-1")
    wait_for(lambda: kept.deliveries, what="first delivery")
    first.close()  # the server went away before it had settled the result
    again = Collector()
    second = connect()
    second.consume(WORK, again, spool=spool)
    wait_for(lambda: again.deliveries, what="the body from the spool")
    assert bytes(again.deliveries[0].body) == b"k" * 9000
    assert again.deliveries[0].redelivered and again.deliveries[0].message_id == "result-1"
    second.close()
    third = Collector()
    connect().consume(WORK, third, spool=spool)
    time.sleep(1.5)
    assert not third.deliveries, "an acked spooled body is handed over once only"


def test_a_rejected_spooled_body_is_dead_lettered_whole_with_its_reason(connect: Connect, tmp_path) -> None:
    transport = connect(chunk_size=1000)
    dead = Collector()
    transport.consume(names.DEAD_LETTER_QUEUE, dead)
    transport.consume(WORK, lambda d: d.reject("wrong round"), spool=SpoolOptions(tmp_path / "spool"))
    transport.publish(WORK_EXCHANGE, "work", b"w" * 4500, headers={"round": 2})
    wait_for(lambda: dead.deliveries, what="dead letter")
    assert dead.deliveries[0].body == b"w" * 4500
    assert dead.deliveries[0].headers[names.REJECT_REASON_HEADER] == "wrong round"
    assert dead.deliveries[0].headers["round"] == 2


def test_dead_lettering_refused_by_the_broker_never_loops_nor_costs_held_deliveries(
    connect: Connect, rabbitmq_node: Any, rabbitmq_url: str
) -> None:
    vhost = _vhost(rabbitmq_url)
    user, password = f"limited-{uuid.uuid4().hex[:6]}", "limited-pw"
    rabbitmq_node.api("PUT", f"/api/users/{user}", {"password": password, "tags": ""})
    quoted = urllib.parse.quote(vhost, safe="")
    # May read and write its work queue and exchange, but not fl.dlx (like a site login of old definitions).
    rabbitmq_node.api(
        "PUT", f"/api/permissions/{quoted}/{user}", {"configure": "^$", "write": "^fl\\.test$", "read": ".*"}
    )
    try:
        connect()  # declares the topology as guest
        parsed = urllib.parse.urlsplit(rabbitmq_url)
        limited = RabbitMQTransport(
            urllib.parse.urlunsplit(parsed._replace(netloc=f"{user}:{password}@{parsed.hostname}:{parsed.port}")),
            options=OPTIONS,
        )
        publisher = connect()
        calls: list[bytes] = []
        held: list[Any] = []

        def handler(delivery: Any) -> None:
            calls.append(bytes(delivery.body))
            if delivery.body == b"keep":
                held.append(delivery)  # in training: must stay with this consumer
            else:
                delivery.reject("not for this site")

        limited.consume(WORK, handler)
        publisher.publish(WORK_EXCHANGE, "work", b"keep")
        wait_for(lambda: held, what="the held delivery")
        publisher.publish(WORK_EXCHANGE, "work", b"bad")
        dead = Collector()
        publisher.consume(names.DEAD_LETTER_QUEUE, dead)
        wait_for(lambda: dead.deliveries, what="the broker's dead-lettering")
        time.sleep(1.5)
        assert calls == [b"keep", b"bad"], "neither message may be redelivered"
        assert len(dead.deliveries) == 1 and dead.deliveries[0].body == b"bad"
        held[0].ack()
        limited.close()
    finally:
        rabbitmq_node.api("DELETE", f"/api/users/{user}")


def test_an_error_while_taking_a_message_dead_letters_it_and_the_consumer_goes_on(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_add = chunking.Reassembler.add
    calls = {"n": 0}

    def failing_add(self: chunking.Reassembler, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("no room")
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(chunking.Reassembler, "add", failing_add)
    transport = connect(chunk_size=1000)
    dead, got = Collector(), Collector()
    transport.consume(names.DEAD_LETTER_QUEUE, dead)
    transport.consume(WORK, got)
    transport.publish(WORK_EXCHANGE, "work", b"a" * 1500)
    wait_for(lambda: dead.deliveries, what="the dead letter")
    assert "consumer error: MemoryError" in dead.deliveries[0].headers[names.REJECT_REASON_HEADER]
    transport.publish(WORK_EXCHANGE, "work", b"after")
    wait_for(lambda: got.deliveries, what="the next message")
    assert transport.failure is None


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_consumer_thread_that_dies_is_reported_as_the_transports_failure(connect: Connect) -> None:
    transport = connect()

    def handler(delivery: Any) -> None:
        raise SystemExit("simulated death of the dispatch thread")

    transport.consume(WORK, handler)
    assert transport.failure is None
    transport.publish(WORK_EXCHANGE, "work", b"x")
    wait_for(lambda: transport.failure is not None, what="the failure")
    assert f"consumer of {WORK} stopped" in (transport.failure or "")
