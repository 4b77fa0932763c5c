"""The local cluster tooling itself (fl_broker.ops.cluster) on the directory's real 3-node cluster: one node
stopped and booted again rejoins, and the others stay reachable meanwhile."""

from __future__ import annotations

import pytest

from tests.support.cluster import wait_whole

pytestmark = pytest.mark.rabbitmq


def test_a_node_stopped_alone_leaves_the_shared_epmd_and_rejoins_when_booted(whole_cluster):
    cluster = whole_cluster
    node, other = cluster.nodes[1], cluster.nodes[0]
    epmd = other.epmd_pids()
    assert epmd and set(epmd).isdisjoint(node.pids())  # the cluster's epmd is no one node's
    node.stop(fast=True)
    assert not node.is_running()
    assert other.epmd_pids() == epmd
    assert "Ping succeeded" in other.ctl("ping", timeout=30)  # rabbitmqctl still finds it through epmd
    node.start(timeout=120)
    wait_whole(cluster, timeout=120)
