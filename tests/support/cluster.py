"""Reading a local RabbitMQ cluster (fl_broker.ops.cluster) through a node's management API, for tests."""

from __future__ import annotations

import time
import urllib.parse

from fl_broker.errors import NodeError
from fl_broker.ops.localnode import LocalNode


def wait_no_partitions(node: LocalNode, timeout: float = 60) -> None:
    """Every node as `node` sees them: running and not partitioned from another."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            rows = [
                {key: row.get(key) for key in ("name", "running", "partitions")}
                for row in node.api("GET", "/api/nodes")
            ]
            if all(row["running"] and not row["partitions"] for row in rows):
                return
        except (NodeError, OSError) as exc:
            rows = [{"error": repr(exc)}]
        if time.monotonic() > deadline:
            raise AssertionError(f"cluster not whole: {rows}")
        time.sleep(0.5)


def queues(node: LocalNode, vhost: str) -> list[dict]:
    return list(node.api("GET", f"/api/queues/{urllib.parse.quote(vhost, safe='')}"))


def assert_nothing_unacked(node: LocalNode, vhost: str, timeout: float = 30) -> None:
    """Every durable queue reports 0 unacked messages (the management stats lag a few seconds; a queue
    without stats yet counts as not known)."""
    deadline = time.monotonic() + timeout
    while True:
        unacked = {q["name"]: q.get("messages_unacknowledged") for q in queues(node, vhost) if q["durable"]}
        if all(count == 0 for count in unacked.values()):
            return
        assert time.monotonic() < deadline, unacked
        time.sleep(1)


def rotated(urls: list[str], first: int) -> str:
    """The URL list starting at node `first` (0-based): the order a program tries the nodes in."""
    return ",".join(urls[first:] + urls[:first])
