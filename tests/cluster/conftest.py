"""One real 3-node RabbitMQ cluster on loopback for every test of this directory (it boots in ~17 s)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from fl_broker.ops.cluster import LocalCluster
from fl_broker.ops.localnode import RABBITMQ_BIN
from tests.support.cluster import make_whole

NET_TICKTIME = 15


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("RabbitMQ is not installed", pytrace=False)
        pytest.skip("RabbitMQ is not installed")
    started = time.monotonic()
    # A paused node stalls the cluster's metadata changes until it counts as down (net_ticktime, 60 s by
    # default): 15 s keeps the pause scenarios short; the default's effect is measured in the README.
    nodes = LocalCluster(tmp_path_factory.mktemp("cluster"), 3, net_ticktime=NET_TICKTIME).start()
    print(f"\n3-node cluster up in {time.monotonic() - started:.1f} s")
    try:
        assert nodes.nodes[0].ctl("eval", "net_kernel:get_net_ticktime().").strip() == str(NET_TICKTIME)
        yield nodes
    finally:
        for node in nodes.nodes:
            node.resume()  # a paused node would not die of SIGKILL before it runs again
        nodes.stop(fast=True)


@pytest.fixture
def whole_cluster(cluster: LocalCluster) -> LocalCluster:
    """The cluster with every node back and running, seen so by every node (an earlier test may have lost
    one for good, in any order), and no vhost of an earlier test."""
    make_whole(cluster)
    for row in cluster.nodes[-1].api("GET", "/api/vhosts"):
        if row["name"].startswith("test-"):  # an earlier test's queues would only load the nodes
            cluster.nodes[-1].api("DELETE", f"/api/vhosts/{row['name']}", timeout=60)
    return cluster
