"""Publishing to a quorum queue right after the node leading it is killed, through another node of the
directory's real 3-node cluster (as a worker does when it fails over and sends its result at once).

RabbitMQ 3.10 nacks such publishes until the queue has a new leader; here a channel that got those nacks
went on getting them for every publish (25 s and 60 s runs, hundreds of publishes), while a new channel's
publishes went through within a second. The publisher therefore starts on a new channel after a nack, and
its publishes must go through again soon."""

from __future__ import annotations

import time
import uuid

import pytest

from fl_broker.errors import PublishFailed
from fl_broker.transport import TransportOptions, connect
from fl_broker.wire import names
from tests.support.cluster import make_whole, queues

pytestmark = pytest.mark.rabbitmq

SITE = "site-1"
IN_A_ROW = 20  # publishes confirmed one after the other: publishing works again


def test_publishes_go_through_again_soon_after_the_leader_of_their_queue_is_killed(whole_cluster):
    cluster = whole_cluster
    vhost = f"test-nack-{uuid.uuid4().hex[:6]}"
    cluster.nodes[2].create_vhost(vhost)
    urls = cluster.amqp_urls(vhost)
    options = TransportOptions(queue_type=names.QUORUM, connect_attempts=5)
    declarer = connect(urls[0], options=options)  # declared through node 1, so node 1 leads the queue
    declarer.declare(names.site_topology(SITE))
    declarer.close()
    leader = {q["name"]: q.get("leader") for q in queues(cluster.nodes[2], vhost)}[names.task_queue(SITE)]
    assert leader == cluster.nodes[0].nodename
    try:
        cluster.nodes[0].kill()
        killed = time.monotonic()
        transport = connect(urls[2], options=options)
        try:
            refused, confirmed, streak = 0, 0, 0
            while streak < IN_A_ROW:
                assert time.monotonic() < killed + 10, f"{refused} refused, only {streak} in a row confirmed"
                try:
                    transport.publish(names.TASK_EXCHANGE, SITE, b"a task")
                    confirmed, streak = confirmed + 1, streak + 1
                except PublishFailed:
                    refused, streak = refused + 1, 0
                time.sleep(0.05)
            print(f"\n{refused} publishes nacked after the kill; {IN_A_ROW} in a row confirmed "
                  f"{time.monotonic() - killed:.2f} s after it")  # fmt: skip
            stored = transport.call(
                lambda ch: ch.queue_declare(names.task_queue(SITE), passive=True), retry=False, what="count"
            ).method.message_count
            assert stored >= confirmed  # a confirmed publish is in the queue (a nacked one may be too)
        finally:
            transport.close()
    finally:
        make_whole(cluster)
