"""A standby server on a real 3-node RabbitMQ cluster with quorum queues: the active server (on node 1) is
killed with SIGKILL mid-run and the standby (on node 2) finishes the run."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.cluster import rotated
from tests.support.federation import ProcessFederation, make_app
from tests.support.standby import assert_each_result_counted_once, assert_exact, assert_nothing_unacked, start_pair

pytestmark = pytest.mark.rabbitmq


def test_the_standby_on_another_node_takes_over_from_a_killed_server(tmp_path, whole_cluster):
    cluster = whole_cluster  # the directory's one cluster, every node up
    vhost = f"test-{uuid.uuid4().hex[:8]}"
    cluster.nodes[0].create_vhost(vhost)
    urls = cluster.amqp_urls(vhost)
    fed = ProcessFederation(
        tmp_path / "ws", rotated(urls, 2), client_grace=5.0, program_args=("--queue-type", "quorum")
    )
    fed.broker_for = {
        "server": rotated(urls, 0),
        "standby": rotated(urls, 1),
        "site-1": rotated(urls, 1),
        "site-2": rotated(urls, 2),
    }
    try:
        start_pair(fed)
        standby = fed.procs["standby"].pid
        fed.start_job(make_app(tmp_path, client_args={"sleep_time": 0.5}))
        fed.wait_for(lambda s: (s["current_round"] or 0) >= 3, what="round 3")
        fed.kill("server")
        killed = time.monotonic()
        status = fed.wait_for(lambda s: s["active_server"]["pid"] == standby, what="the standby to take over")
        print(f"\nstandby answered as the active server {time.monotonic() - killed:.2f} s after the kill")
        assert status["active_server"]["epoch"] == 2
        assert fed.wait_finished(timeout=240)["phase"] == "finished"
        assert_exact(fed)
        assert_each_result_counted_once(fed)
        assert_nothing_unacked(cluster.nodes[1], urls[1])
    finally:
        fed.procs.pop("server", None)
        fed.close()
