"""A publish the broker nacks (here: a full queue with `x-overflow: reject-publish`, on the suite's real node)
is refused to its caller, and the transport's next publishes go through: a nack never leaves publishing
unusable. Both queue types (a quorum queue nacks the same way while it has no leader)."""

from __future__ import annotations

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
