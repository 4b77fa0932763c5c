"""A private RabbitMQ node on loopback, for development, the test suite and `fl-broker poc`.

Runs Debian's `rabbitmq-server` directly (not the /usr/sbin wrappers, which switch to the `rabbitmq` user and
force /var/lib/rabbitmq) with every path, port, cookie and epmd instance under one base directory, so it
never touches or clashes with a system node. Boot takes 5-9 s; readiness is polled through the management
HTTP API, which is cheaper than `rabbitmqctl` (~0.7 s per call).

    python -m fl_broker.ops.localnode start --dir /tmp/fl-node [--port 5673]
    python -m fl_broker.ops.localnode stop --dir /tmp/fl-node [--fast]
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from fl_broker.errors import NodeError
from fl_broker.ops import processes
from fl_broker.ops.nodeconfig import ClusterSettings, NodeConfig, TlsListener, load_state
from fl_broker.ops.provision import policy_definition
from fl_broker.wire import names

log = logging.getLogger(__name__)

RABBITMQ_BIN = Path(os.environ.get("FL_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
MAX_MESSAGE_SIZE = 128 * 1024 * 1024  # RabbitMQ 3.x default; 512 MiB is the broker's ceiling


LOWEST_PORT = 10000  # free_port() picks from here up to the kernel's ephemeral range
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now, below the kernel's ephemeral range when there is room.
    A node keeps its ports across a restart, and while it is down a port of that range can be handed to any
    process on the machine that binds port 0 (a broker restart in a test once failed to listen again:
    eaddrinuse); the kernel never hands out a port below that range."""
    low = _ephemeral_low()
    if low > LOWEST_PORT:
        for port in random.sample(range(LOWEST_PORT, low), min(200, low - LOWEST_PORT)):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to a bind to port 0 or a connect (0 if unknown)."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


class LocalNode:
    """One private RabbitMQ node whose files all live in `base_dir`. Ports left as None are picked free."""

    def __init__(
        self,
        base_dir: Path,
        *,
        amqp_port: int | None = None,
        dist_port: int | None = None,
        mgmt_port: int | None = None,
        max_message_size: int = MAX_MESSAGE_SIZE,
        tls: TlsListener | None = None,
        cluster: ClusterSettings | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        state = load_state(self.base_dir)
        self.cluster = cluster
        self.nodename: str = (
            state.get("nodename")
            or (cluster.nodename if cluster else None)
            or (f"fl-{uuid.uuid4().hex[:10]}@localhost")
        )
        self.amqp_port: int = amqp_port or state.get("amqp_port") or free_port()
        self.dist_port: int = dist_port or state.get("dist_port") or free_port()
        self.mgmt_port: int = mgmt_port or state.get("mgmt_port") or free_port()
        self.epmd_port: int = state.get("epmd_port") or (cluster.epmd_port if cluster else None) or free_port()
        self.max_message_size = max_message_size
        self.tls = tls
        self.amqps_port: int | None = None
        if tls is not None:
            self.amqps_port = tls.port or state.get("amqps_port") or free_port()

    # -- addresses -------------------------------------------------------------------------------------
    def amqp_url(self, vhost: str = "/fl", user: str = "guest", password: str = "guest") -> str:
        """The AMQP URL of `vhost` on this node."""
        return f"amqp://{user}:{password}@127.0.0.1:{self.amqp_port}/{urllib.parse.quote(vhost, safe='')}"

    def amqps_url(self, vhost: str = "/fl", user: str = "guest", password: str = "guest") -> str:
        """The AMQPS URL of `vhost` (host name `localhost`, which the test certificates name)."""
        if self.amqps_port is None:
            raise NodeError("this node has no TLS listener")
        return f"amqps://{user}:{password}@localhost:{self.amqps_port}/{urllib.parse.quote(vhost, safe='')}"

    @property
    def mgmt_url(self) -> str:
        """Base URL of the management HTTP API/UI (guest/guest from loopback)."""
        return f"http://127.0.0.1:{self.mgmt_port}"

    @property
    def pid_file(self) -> Path:
        """Where the node writes its process id."""
        return self.config().pid_file

    @property
    def log_dir(self) -> Path:
        """Where the node writes its logs."""
        return self.config().log_dir

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> LocalNode:
        """Boot the node, wait until AMQP and management answer, create vhost /fl for guest."""
        if self.is_running():
            log.info("RabbitMQ node %s already running", self.nodename)
            return self
        self._write_files()
        log.info("starting RabbitMQ node %s (amqp %d) in %s", self.nodename, self.amqp_port, self.base_dir)
        subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmq-server"), "-detached"],
            env=self._env(),
            cwd=self.base_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=timeout,
        )
        try:
            self._wait_ready(time.monotonic() + timeout)
            self.create_vhost("/fl")
        except BaseException:
            self.stop(timeout=10)
            raise
        return self

    def stop(self, timeout: float = 30, *, fast: bool = False) -> None:
        """Stop gracefully (`rabbitmqctl stop`, 6-9 s with the management plugin), then SIGKILL the node and
        its epmd if still alive. `fast`: SIGKILL at once (~0.2 s), for a throwaway node; what it had
        persisted is recovered at its next start, as after a crash."""
        pids = self._node_pids()
        if pids and self.pid_file.exists() and not fast:
            log.info("stopping RabbitMQ node %s (graceful: a few seconds; --fast kills it at once)", self.nodename)
            try:
                self.ctl("stop", str(self.pid_file), timeout=timeout)
            except (NodeError, subprocess.TimeoutExpired) as exc:
                log.warning("graceful stop of %s failed (%s); killing it", self.nodename, exc)
        for pid in self.pids():
            processes.kill(pid)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the node only (not the epmd its cluster shares): a node lost as in a crash."""
        for pid in self._node_pids():
            processes.kill(pid)

    def pause(self) -> None:
        """SIGSTOP the node: it neither answers nor lets go of its connections, as a machine cut off the
        network (or a VM suspended) would. `resume()` lets it go on."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused node."""
        self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> None:
        for pid in self._node_pids():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def pids(self) -> list[int]:
        """The live processes of this node and of its own epmd (for stopping it, or measuring its memory).
        A cluster's epmd is not one node's: killed with a node, it took the others' registrations with it,
        so rabbitmqctl could no longer reach them and a rebooted node could not find its peers to rejoin."""
        return self._node_pids() + ([] if self.cluster is not None else self.epmd_pids())

    def is_running(self) -> bool:
        """Whether the node's management API answers."""
        try:
            self.api("GET", "/api/overview", timeout=2)
            return True
        except (OSError, NodeError):
            return False

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """Run `rabbitmqctl ARGS` against this node; returns stdout, raises NodeError on failure."""
        proc = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.nodename, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise NodeError(f"rabbitmqctl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def api(self, method: str, path: str, body: Any = None, *, timeout: float = 10) -> Any:
        """Call the management HTTP API as guest; returns the decoded JSON (or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.mgmt_url + path, data=data, method=method)
        req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise NodeError(f"{method} {path}: HTTP {exc.code} {exc.read()[:200]!r}") from exc
        return json.loads(raw) if raw else None

    def create_vhost(self, name: str, user: str = "guest") -> str:
        """Create `name` (idempotent) with fl-broker's policies (bounded dead-letter queues), give `user`
        full permissions on it, return its AMQP URL."""
        quoted = urllib.parse.quote(name, safe="")
        # A new vhost starts on every cluster node before the PUT answers; right after a cluster formed,
        # on a busy machine, that can take longer than one call's timeout. The PUT is idempotent: retry.
        deadline = time.monotonic() + 120
        while True:
            try:
                self.api("PUT", f"/api/vhosts/{quoted}", {}, timeout=60)
                break
            except (TimeoutError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise
        self.api("PUT", f"/api/permissions/{quoted}/{user}", {"configure": ".*", "write": ".*", "read": ".*"})
        for policy in names.POLICIES:
            body = {k: v for k, v in policy_definition(name, policy).items() if k not in ("vhost", "name")}
            self.api("PUT", f"/api/policies/{quoted}/{urllib.parse.quote(policy.name, safe='')}", body)
        return self.amqp_url(name)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the node's log files (boot errors end up there)."""
        chunks = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(chunks) or "(no log files)"

    def __enter__(self) -> LocalNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------------------
    def config(self) -> NodeConfig:
        """This node's name, ports and settings, as its files and environment spell them."""
        return NodeConfig(
            base_dir=self.base_dir,
            nodename=self.nodename,
            amqp_port=self.amqp_port,
            dist_port=self.dist_port,
            mgmt_port=self.mgmt_port,
            epmd_port=self.epmd_port,
            amqps_port=self.amqps_port,
            max_message_size=self.max_message_size,
            tls=self.tls,
            cluster=self.cluster,
        )

    def _env(self) -> dict[str, str]:
        return self.config().env()

    def _write_files(self) -> None:
        """Write the node's files (a method, so that a test's node can write others over them)."""
        self.config().write()

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.is_running() and processes.port_open(self.amqp_port):
                log.info("RabbitMQ node %s is up", self.nodename)
                return
            if self.pid_file.exists() and not self._node_pids():
                raise NodeError(f"RabbitMQ node {self.nodename} exited during boot:\n{self.log_tail()}")
            time.sleep(0.25)
        raise NodeError(f"RabbitMQ node {self.nodename} did not come up in time:\n{self.log_tail()}")

    def _node_pids(self) -> list[int]:
        """Processes of this node: the pid file's, plus any process started with our unique node name (the
        node names itself after boot, so its command line does not show it; its environment does)."""
        marker = f"RABBITMQ_NODENAME={self.nodename}".encode()
        pids = set(processes.pids_matching(lambda cmd, env: marker in env.split(b"\0")))
        try:
            pids.add(int(self.pid_file.read_text().strip()))
        except (OSError, ValueError):
            pass
        return [pid for pid in pids if processes.alive(pid)]

    def epmd_pids(self) -> list[int]:
        """The live epmd this node registers with (a cluster's is shared by all of its nodes)."""
        marker = f"ERL_EPMD_PORT={self.epmd_port}".encode()
        return processes.pids_matching(lambda cmd, env: b"epmd" in cmd.split(b"\0")[0] and marker in env.split(b"\0"))


def main(argv: list[str] | None = None) -> int:
    """`python -m fl_broker.ops.localnode start|stop|status --dir DIR [--port N]`."""
    parser = argparse.ArgumentParser(prog="python -m fl_broker.ops.localnode", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--dir", required=True, type=Path, help="base directory of the node's files")
    parser.add_argument("--port", type=int, default=None, help="AMQP port (default: a free one)")
    parser.add_argument("--mgmt-port", type=int, default=None, help="management port (default: a free one)")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--fast", action="store_true", help="stop: kill the node at once (a throwaway node)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    node = LocalNode(args.dir, amqp_port=args.port, mgmt_port=args.mgmt_port)
    try:
        if args.command == "start":
            node.start(timeout=args.timeout)
        elif args.command == "stop":
            node.stop(fast=args.fast)
            print("stopped")
            return 0
        elif not node.is_running():
            print("not running")
            return 1
    except NodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(node.amqp_url())
    print(f"management: {node.mgmt_url}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
