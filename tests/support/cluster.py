"""Reading a local RabbitMQ cluster (fl_broker.ops.cluster) through a node's management API, for tests, and
making it whole again after a test lost a node."""

from __future__ import annotations

import subprocess
import time
import urllib.parse

from fl_broker.errors import NodeError
from fl_broker.ops.cluster import LocalCluster
from fl_broker.ops.localnode import LocalNode

# A node that comes back from a pause past net_ticktime finds a partition only once it talks to the others
# again, and autoheal then restarts it: a cluster that looked whole for a moment may not be. It counts as
# whole once every node has said so for this long.
STABLE_SECONDS = 3.0


def wait_no_partitions(node: LocalNode, timeout: float = 60) -> None:
    """Every node as `node` sees them: running and not partitioned from another."""
    deadline = time.monotonic() + timeout
    while True:
        rows = _view(node)
        if _whole(rows, None):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"cluster not whole: {rows}")
        time.sleep(0.5)


def wait_whole(cluster: LocalCluster, timeout: float = 60) -> None:
    """Every node of `cluster` answers, sees all of them running and none partitioned, and has kept saying so
    for STABLE_SECONDS. Raises AssertionError with each node's view after `timeout`."""
    deadline = time.monotonic() + timeout
    whole_since: float | None = None
    while True:
        views = {node.nodename: _view(node) for node in cluster.nodes}
        if all(_whole(rows, len(cluster.nodes)) for rows in views.values()):
            whole_since = whole_since or time.monotonic()
            if time.monotonic() - whole_since >= STABLE_SECONDS:
                return
        else:
            whole_since = None
        if time.monotonic() > deadline:
            raise AssertionError(f"cluster not whole after {timeout:.0f} s: {views}")
        time.sleep(0.5)


def make_whole(cluster: LocalCluster) -> None:
    """Bring every node back (resume a paused one, start a stopped app or a dead node) and wait until the
    cluster is whole; a node still not right after 60 s is killed and booted afresh (it rejoins from its
    data directory), as CI once saw a node a scenario left behind never count as running again."""
    for node in cluster.nodes:
        node.resume()  # a paused node must run before anything else can be asked of it
    for node in cluster.nodes:
        if not node.is_running():
            _bring_up(node)
    try:
        wait_whole(cluster, timeout=60)
        return
    except AssertionError as exc:
        print(f"\nrebooting the nodes that are not whole: {exc}")
    for node in cluster.nodes:
        if not _whole(_view(node), len(cluster.nodes)):
            node.kill()
            node.start(timeout=120)
    wait_whole(cluster, timeout=120)


def _bring_up(node: LocalNode) -> None:
    # Asked of the node itself: its pids() count the epmd the cluster shares, so they never show a VM gone
    # (a node killed for good was once sent start_app, which failed, and came back only by the reboot below).
    try:
        node.ctl("ping", timeout=30)
        vm_up = True  # its app was stopped (or autoheal is restarting it)
    except (NodeError, subprocess.TimeoutExpired):
        vm_up = False
    try:
        if vm_up:
            node.ctl("start_app", timeout=60)
        else:
            node.start(timeout=60)
    except (NodeError, subprocess.TimeoutExpired):
        pass  # the wait that follows tells, and a node that did not come back is booted afresh


def _view(node: LocalNode) -> list[dict]:
    """The cluster's nodes as `node` sees them (name, running, partitions), or the error asking it."""
    try:
        return [
            {key: row.get(key) for key in ("name", "running", "partitions")}
            for row in node.api("GET", "/api/nodes", timeout=5)
        ]
    except (NodeError, OSError) as exc:
        return [{"error": repr(exc)}]


def _whole(rows: list[dict], count: int | None) -> bool:
    ok = all(row.get("running") and not row.get("partitions") for row in rows)
    return ok and (count is None or len(rows) == count)


def queues(node: LocalNode, vhost: str) -> list[dict]:
    return list(node.api("GET", f"/api/queues/{urllib.parse.quote(vhost, safe='')}"))


def assert_nothing_unacked(node: LocalNode, vhost: str, timeout: float = 60) -> None:
    """Every durable queue reports 0 unacked messages (the management stats lag a few seconds; a queue
    without stats yet counts as not known). The API may not answer at all while a paused node is not yet
    counted as down (it asks every node for its queues' stats), so the wait outlasts net_ticktime."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            unacked = {q["name"]: q.get("messages_unacknowledged") for q in queues(node, vhost) if q["durable"]}
        except (NodeError, OSError) as exc:
            unacked = {"(management API)": repr(exc)}
        if all(count == 0 for count in unacked.values()):
            return
        assert time.monotonic() < deadline, unacked
        time.sleep(1)


def rotated(urls: list[str], first: int) -> str:
    """The URL list starting at node `first` (0-based): the order a program tries the nodes in."""
    return ",".join(urls[first:] + urls[:first])
