"""A publish the broker nacks (here: a full queue with `x-overflow: reject-publish`, on the suite's real node)
is refused to its caller, and the transport's next publishes go through: a nack never leaves publishing
unusable. Both queue types (a quorum queue nacks the same way while it has no leader)."""

from __future__ import annotations

import threading
import time

import pytest

from fl_broker.errors import PublishFailed
from fl_broker.transport import TransportOptions, connect
from fl_broker.wire import names

pytestmark = pytest.mark.rabbitmq

FULL, OTHER = "test.full", "test.other"


def topology() -> names.Topology:
    bounded = {"x-max-length": 1, "x-overflow": "reject-publish"}
    return names.Topology(exchanges=(), queues=(names.QueueSpec(FULL, arguments=bounded), names.QueueSpec(OTHER)))


@pytest.mark.parametrize("queue_type", [names.CLASSIC, names.QUORUM])
def test_a_nacked_publish_is_refused_and_the_next_ones_go_through(rabbitmq_url, queue_type):
    transport = connect(rabbitmq_url, options=TransportOptions(queue_type=queue_type))
    try:
        transport.declare(topology())
        transport.publish("", FULL, b"fits")
        if queue_type == names.QUORUM:  # a quorum queue learns it is full from the enqueue past its limit
            transport.publish("", FULL, b"past the limit")
        for _ in range(3):  # nack after nack on the same transport
            with pytest.raises(PublishFailed, match="nacked"):
                transport.publish("", FULL, b"does not fit")
            transport.publish("", OTHER, b"goes through")
        transport.call(lambda ch: ch.queue_purge(FULL), retry=False, what="purge")
        transport.publish("", FULL, b"fits again")
        counts = {q: transport.call(lambda ch, q=q: ch.queue_declare(q, passive=True), retry=False, what="count")
                  for q in (FULL, OTHER)}  # fmt: skip
        assert {q: ok.method.message_count for q, ok in counts.items()} == {FULL: 1, OTHER: 3}, queue_type
    finally:
        transport.close()


WORK, FULL_DEAD = "test.work", "test.full-dead-letters"


def dead_letter_topology() -> names.Topology:
    """A work queue dead-lettering into fl.dlx, where a full reject-publish queue beside the dead-letter queue
    makes the broker nack every copy published to fl.dlx (a fanout: one refusing queue nacks the publish)."""
    bounded = {"x-max-length": 1, "x-overflow": "reject-publish"}
    return names.Topology(
        exchanges=(names.ExchangeSpec(names.DEAD_LETTER_EXCHANGE, "fanout"),),
        queues=(
            names.QueueSpec(WORK, arguments={"x-dead-letter-exchange": names.DEAD_LETTER_EXCHANGE}),
            names.QueueSpec(names.DEAD_LETTER_QUEUE, ((names.DEAD_LETTER_EXCHANGE, ""),)),
            names.QueueSpec(FULL_DEAD, ((names.DEAD_LETTER_EXCHANGE, ""),), bounded),
        ),
    )


def test_a_rejected_delivery_whose_dead_letter_copy_is_nacked_is_still_settled(rabbitmq_url):
    """The copy with our reason cannot be published (nacked twice), so the original is nacked without
    requeue and the broker dead-letters it itself; it must never stay unacked on the consumer's channel."""
    transport = connect(rabbitmq_url)
    try:
        transport.declare(dead_letter_topology())
        transport.publish("", FULL_DEAD, b"fills it")
        rejected = threading.Event()

        def reject(delivery):
            delivery.reject("bad round")
            rejected.set()

        transport.consume(WORK, reject)
        transport.publish("", WORK, b"refused")
        assert rejected.wait(15)
        deadline = time.monotonic() + 15
        while message_count(transport, names.DEAD_LETTER_QUEUE) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        # At least one copy: a nacked fanout publish still lands in the queues that took it, and the broker's
        # own dead-lettering of the nacked original adds one more.
        assert message_count(transport, names.DEAD_LETTER_QUEUE) >= 1
        time.sleep(0.5)  # the settle is posted to the I/O thread: give it time before the close
    finally:
        transport.close()
    # Had the original stayed unacked, closing the consumer would have put it back in the work queue.
    transport = connect(rabbitmq_url)
    try:
        assert message_count(transport, WORK) == 0
    finally:
        transport.close()


def message_count(transport, queue: str) -> int:
    ok = transport.call(lambda ch: ch.queue_declare(queue, passive=True), retry=False, what="count")
    return ok.method.message_count
