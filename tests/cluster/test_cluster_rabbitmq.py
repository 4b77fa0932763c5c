"""hello-numpy-sag on a real 3-node RabbitMQ cluster on loopback (fl_broker.ops.cluster), quorum queues, the
server and each site on a different node, and the server's node killed for good mid-run."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from tests.support.cluster import assert_nothing_unacked, queues, rotated
from tests.support.federation import ProcessFederation, make_app

pytestmark = pytest.mark.rabbitmq

INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)


def test_hello_survives_the_loss_of_the_server_node_with_quorum_queues(tmp_path, whole_cluster):
    cluster = whole_cluster
    vhost = f"test-{uuid.uuid4().hex[:8]}"
    cluster.nodes[0].create_vhost(vhost)  # vhosts are cluster-wide
    urls = cluster.amqp_urls(vhost)
    fed = ProcessFederation(
        tmp_path / "ws", rotated(urls, 2), client_grace=5.0, program_args=("--queue-type", "quorum")
    )
    fed.broker_for = {"server": rotated(urls, 0), "site-1": rotated(urls, 1), "site-2": rotated(urls, 2)}
    try:
        fed.start_server()
        for site in ("site-1", "site-2"):
            fed.start_worker(site)
        fed.wait_clients(2)
        types = {q["name"]: (q["type"], len(q.get("members") or [])) for q in queues(cluster.nodes[2], vhost)}
        assert types["fl.result.server"] == ("quorum", 3) and types["fl.task.site-1"] == ("quorum", 3)
        fed.start_job(make_app(tmp_path, client_args={"sleep_time": 0.5}))
        fed.wait_for(lambda s: (s["current_round"] or 0) >= 3, what="round 3")
        killed_at = time.monotonic()
        cluster.nodes[0].kill()  # the server's node, where it declared (and led) its queues
        status = fed.wait_finished(timeout=240)
        print(f"\nrun finished {time.monotonic() - killed_at:.1f} s after node 1 was killed")
        assert status["phase"] == "finished"
        np.testing.assert_array_equal(
            np.load(fed.workspace / "server" / "run_1" / "models" / "server.npy"), INITIAL + 10
        )
        accepted = fed.accepted_per_round()
        assert {r: sorted(sites) for r, sites in accepted.items()} == {r: ["site-1", "site-2"] for r in range(10)}
        assert "failed over from node" in fed.log("server")
        assert_nothing_unacked(cluster.nodes[2], vhost)
    finally:
        fed.close()
