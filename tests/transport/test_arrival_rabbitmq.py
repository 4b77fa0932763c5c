"""On a real RabbitMQ node: chunks are taken by their keeper on the I/O thread as pika completes them (so
their frames never wait beside what was copied of them), a handled body is freed before the next message
arrives, and a chunked publish keeps at most a quarter chunk unwritten before it marshals the next one."""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import pytest

from fl_broker.transport import Delivery
from fl_broker.transport.rabbitmq import RabbitMQTransport, frames
from fl_broker.transport.rabbitmq import publisher as publisher_module
from fl_broker.transport.rabbitmq.incoming import Incoming
from fl_broker.transport.rabbitmq.streams import HeldStreams, SpooledStreams
from fl_broker.transport.spool import SpoolOptions
from tests.transport.test_rabbitmq import WORK, WORK_EXCHANGE, Collector, connect, wait_for

pytestmark = pytest.mark.rabbitmq
__all__ = ["connect"]  # the fixture, shared with test_rabbitmq.py

Connect = Callable[..., RabbitMQTransport]
CHUNK = 4096


class TakeLog:
    """Records, for each chunk a keeper takes, the thread it ran on and its stream index."""

    def __init__(self) -> None:
        self.taken: list[tuple[str, int]] = []

    def wrap(self, take: Callable[..., Delivery | None]) -> Callable[..., Delivery | None]:
        def recording(keeper: object, item: Incoming) -> Delivery | None:
            self.taken.append((threading.current_thread().name, int(item.headers["x-fl-chunk-index"])))
            return take(keeper, item)

        return recording


@pytest.fixture
def take_log() -> Iterator[TakeLog]:
    log = TakeLog()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HeldStreams, "take", log.wrap(HeldStreams.take))
        patch.setattr(SpooledStreams, "take", log.wrap(SpooledStreams.take))
        yield log


@pytest.mark.parametrize("spooled", [False, True], ids=["held", "spooled"])
def test_a_second_body_is_taken_on_arrival_while_the_handler_is_busy(
    connect: Connect, take_log, tmp_path, spooled: bool
) -> None:
    transport = connect(chunk_size=CHUNK)
    release, first_in_handler = threading.Event(), threading.Event()
    bodies: list[bytes] = []

    def handler(delivery: Delivery) -> None:
        bodies.append(bytes(delivery.body))
        first_in_handler.set()
        release.wait(20)
        delivery.ack()

    transport.consume(WORK, handler, spool=SpoolOptions(tmp_path / "spool") if spooled else None)
    first, second = os.urandom(CHUNK * 10 + 5), os.urandom(CHUNK * 12 + 9)
    transport.publish(WORK_EXCHANGE, "work", first)
    assert first_in_handler.wait(15), "the first body never reached the handler"
    transport.publish(WORK_EXCHANGE, "work", second)
    # The dispatch thread is held by the handler: every chunk of the second body is taken all the same.
    wait_for(lambda: len(take_log.taken) == 11 + 13, what="the second body's chunks taken on arrival")
    assert len(bodies) == 1
    assert {name for name, _ in take_log.taken} == {f"fl-amqp-io-{transport.user}"}
    release.set()
    wait_for(lambda: len(bodies) == 2, what="the second body handled")
    assert bodies == [first, second]


def test_a_chunk_is_taken_while_the_io_thread_waits_inside_a_blocking_operation(connect: Connect, take_log) -> None:
    # pika's blocking channel dispatches a consumer's deliveries only between operations; one that waits (a
    # publisher's confirm, a declare) would keep each arriving chunk as frames until it is done.
    consumer, sender = connect(chunk_size=CHUNK), connect(chunk_size=CHUNK)
    got = Collector()
    consumer.consume(WORK, got)  # held: the prefetch lets every chunk come while nothing is acked
    body = os.urandom(CHUNK * 6 + 1)
    seen_inside: list[int] = []

    def wait_on_the_io_thread(ch: object) -> None:
        threading.Thread(target=sender.publish, args=(WORK_EXCHANGE, "work", body)).start()
        deadline = time.monotonic() + 15
        ch._flush_output(lambda: len(take_log.taken) == 7 or time.monotonic() > deadline)  # type: ignore[attr-defined]
        seen_inside.append(len(take_log.taken))

    consumer.call(wait_on_the_io_thread, retry=False, what="wait on the I/O thread")
    assert seen_inside == [7], "chunks waited for the blocking operation to end"
    wait_for(lambda: got.deliveries, what="the body")
    assert bytes(got.deliveries[0].body) == body


def test_a_handled_body_is_freed_before_the_next_message_arrives(connect: Connect) -> None:
    transport = connect(chunk_size=CHUNK)
    refs: list[weakref.ref[Delivery]] = []

    def handler(delivery: Delivery) -> None:
        refs.append(weakref.ref(delivery))
        delivery.ack()

    transport.consume(WORK, handler)
    gc.disable()  # freed by its last reference going, not by the cyclic collector
    try:
        transport.publish(WORK_EXCHANGE, "work", os.urandom(CHUNK * 8 + 3))
        wait_for(lambda: refs, what="the body handled")
        wait_for(lambda: refs[0]() is None, timeout=5, what="the handled delivery (and its body) freed")
    finally:
        gc.enable()


def test_a_chunked_publish_marshals_the_next_chunk_only_once_pika_has_written_most_of_the_last(
    connect: Connect,
) -> None:
    chunk = 64 * 1024
    sender, consumer = connect(chunk_size=chunk), connect(chunk_size=chunk)
    unwritten: list[int] = []
    publish = publisher_module.Publisher._publish

    def recording(self: publisher_module.Publisher, pub, exchange, key, data, props) -> None:  # type: ignore[no-untyped-def]
        unwritten.append(frames.unsent_bytes(pub._impl))
        publish(self, pub, exchange, key, data, props)

    got = Collector()
    consumer.consume(WORK, got)
    body = os.urandom(chunk * 48 + 11)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(publisher_module.Publisher, "_publish", recording)
        sender.publish(WORK_EXCHANGE, "work", body)
    assert len(unwritten) == 49
    assert max(unwritten) <= chunk // 4, "chunks were marshalled ahead of the socket"
    wait_for(lambda: got.deliveries, what="the chunked body")
    assert bytes(got.deliveries[0].body) == body
