"""A private RabbitMQ cluster of N nodes on loopback, for development and tests (`local-node.sh cluster`).

Each node is a LocalNode in DIR/node-I with its own AMQP, management and distribution ports; the nodes
share one Erlang cookie and one epmd (nodes find each other's distribution port through it), both private
to DIR. Node 1 boots first; the others boot together and join it at boot through classic peer discovery.
Quorum queues replicate over Erlang distribution, so they need no further ports.

    python -m fl_broker.ops.cluster start --dir /tmp/fl-cluster --nodes 3     # prints URL1,URL2,URL3
    python -m fl_broker.ops.cluster stop --dir /tmp/fl-cluster [--fast]
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from fl_broker.errors import NodeError
from fl_broker.ops import processes
from fl_broker.ops.localnode import ClusterSettings, LocalNode, free_port

log = logging.getLogger(__name__)

_STATE_FILE = "cluster.json"


class LocalCluster:
    """N LocalNodes under `base_dir` that form one RabbitMQ cluster."""

    def __init__(self, base_dir: Path, nodes: int = 3, *, net_ticktime: int | None = None) -> None:
        self.base_dir = Path(base_dir).resolve()
        state = self._load_state()
        count = int(state.get("nodes") or nodes)
        if count < 1:
            raise ValueError(f"a cluster needs at least one node, got {count}")
        prefix = state.get("prefix") or f"fl-{uuid.uuid4().hex[:8]}"
        epmd_port = int(state.get("epmd_port") or free_port())
        cookie = state.get("cookie") or secrets.token_hex(20).upper()
        names = [f"{prefix}-{i}@localhost" for i in range(1, count + 1)]
        ticktime = net_ticktime or state.get("net_ticktime")
        self._state = {
            "nodes": count,
            "prefix": prefix,
            "epmd_port": epmd_port,
            "cookie": cookie,
            "net_ticktime": ticktime,
        }
        self.nodes = [
            LocalNode(
                self.base_dir / f"node-{i}",
                cluster=ClusterSettings(name, epmd_port, cookie, tuple(names), net_ticktime=ticktime),
            )
            for i, name in enumerate(names, 1)
        ]

    def amqp_urls(self, vhost: str = "/fl") -> list[str]:
        """One AMQP URL per node (guest, loopback), in node order."""
        return [node.amqp_url(vhost) for node in self.nodes]

    def start(self, timeout: float = 120) -> LocalCluster:
        """Boot node 1, then the others at once (each joins node 1 as it boots); wait until all are running."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / _STATE_FILE).write_text(json.dumps(self._state, indent=2) + "\n")
        try:
            self.nodes[0].start(timeout=timeout)
            self._start_together(self.nodes[1:], timeout)
            self.wait_running(len(self.nodes), timeout)
        except BaseException:
            self.stop(fast=True)
            raise
        return self

    def wait_running(self, count: int, timeout: float = 60, via: LocalNode | None = None) -> None:
        """Wait until `count` nodes of the cluster are running, as `via` (default: the first live node) sees."""
        deadline = time.monotonic() + timeout
        running: list[str] = []
        while time.monotonic() < deadline:
            try:
                node = via or next(n for n in self.nodes if n.is_running())
                running = [n["name"] for n in node.api("GET", "/api/nodes") if n.get("running")]
                if len(running) >= count:
                    return
            except (StopIteration, NodeError, OSError):
                pass
            time.sleep(0.5)
        raise NodeError(f"only {len(running)} of {count} cluster nodes are running: {running}")

    def stop(self, *, fast: bool = False) -> None:
        """Stop every node (fast: SIGKILL at once), then the cluster's epmd."""
        for node in reversed(self.nodes):
            try:
                node.stop(timeout=30, fast=fast)  # leaves the epmd, which the nodes still up need
            except (NodeError, OSError) as exc:
                log.warning("stopping %s: %s", node.nodename, exc)
        for pid in self.nodes[0].epmd_pids():
            processes.kill(pid)

    def _start_together(self, nodes: list[LocalNode], timeout: float) -> None:
        errors: list[BaseException] = []

        def boot(node: LocalNode) -> None:
            try:
                node.start(timeout=timeout)
            except BaseException as exc:  # reported below, in this thread
                errors.append(exc)

        threads = [threading.Thread(target=boot, args=(node,)) for node in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def _load_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.base_dir / _STATE_FILE).read_text()))
        except (OSError, ValueError):
            return {}


def main(argv: list[str] | None = None) -> int:
    """`python -m fl_broker.ops.cluster start|stop --dir DIR [--nodes N]`: start prints the URL list."""
    parser = argparse.ArgumentParser(prog="local-node.sh cluster", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--dir", required=True, type=Path, help="base directory of the nodes' files")
    parser.add_argument("--nodes", type=int, default=3, help="number of nodes (start)")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument(
        "--net-ticktime",
        type=int,
        default=None,
        help="start: seconds until a silent node counts as down (Erlang's net_ticktime; default 60)",
    )
    parser.add_argument("--fast", action="store_true", help="stop: kill the nodes at once")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        cluster = LocalCluster(args.dir, args.nodes, net_ticktime=args.net_ticktime)
        if args.command == "stop":
            cluster.stop(fast=args.fast)
            print("stopped")
            return 0
        cluster.start(timeout=args.timeout)
    except (NodeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(",".join(cluster.amqp_urls()))
    for node in cluster.nodes:
        print(f"{node.nodename}: management {node.mgmt_url}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
