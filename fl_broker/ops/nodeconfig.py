"""The files and environment that configure a private RabbitMQ node (see fl_broker.ops.localnode).

Every path the node reads or writes is under its base directory: `rabbitmq.conf` (listeners on loopback,
management, limits, TLS, cluster formation), an empty `rabbitmq-env.conf` (so no system-wide settings
apply), `enabled_plugins`, the Erlang cookie a cluster's nodes share, and `node.json`, which remembers the
node's name and ports so that a restart comes back at the same addresses. The environment points
`rabbitmq-server` and `rabbitmqctl` at those files and at the node's own epmd."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_FILE = "node.json"
_LOOPBACK_ERL_ARGS = "-kernel inet_dist_use_interface {127,0,0,1}"


@dataclass(frozen=True)
class TlsListener:
    """An amqps listener on loopback: the node's certificate, its key, and the CA it trusts for client
    certificates (a client certificate is checked when presented, not required)."""

    ca: Path
    cert: Path
    key: Path
    port: int | None = None  # None: a free one


@dataclass(frozen=True)
class ClusterSettings:
    """What makes a node one of a local cluster (fl_broker.ops.cluster): its name, the epmd every node of
    the cluster registers with, the shared Erlang cookie, and the peers it joins when it first boots."""

    nodename: str
    epmd_port: int
    cookie: str
    peers: tuple[str, ...]
    # Seconds until the others count a silent node as down (Erlang's net_ticktime, 60 by default). Until
    # then a node cut off or paused stalls every metadata change of the cluster (declares, bindings,
    # exclusive queues), so programs that reconnect wait that long; None keeps the default.
    net_ticktime: int | None = None


@dataclass(frozen=True)
class NodeConfig:
    """One node's name, ports and settings, as its files and environment spell them."""

    base_dir: Path
    nodename: str
    amqp_port: int
    dist_port: int
    mgmt_port: int
    epmd_port: int
    amqps_port: int | None
    max_message_size: int
    tls: TlsListener | None
    cluster: ClusterSettings | None

    @property
    def log_dir(self) -> Path:
        """Where the node writes its logs."""
        return self.base_dir / "log"

    @property
    def pid_file(self) -> Path:
        """Where the node writes its process id."""
        return self.base_dir / "rabbitmq.pid"

    def env(self) -> dict[str, str]:
        """This process's environment without any RABBITMQ_/ERL_ setting, plus the node's own."""
        base = self.base_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(base),  # own Erlang cookie
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=self._erl_args(),
            RABBITMQ_CTL_ERL_ARGS=self._erl_args(),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def _erl_args(self) -> str:
        ticktime = self.cluster.net_ticktime if self.cluster is not None else None
        return _LOOPBACK_ERL_ARGS + (f" -kernel net_ticktime {ticktime}" if ticktime else "")

    def write(self) -> None:
        """Write every file the node reads at boot, and node.json."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        if self.cluster is not None:
            cookie = self.base_dir / ".erlang.cookie"  # HOME is base_dir: every node of the cluster shares it
            cookie.unlink(missing_ok=True)
            cookie.write_text(self.cluster.cookie)
            cookie.chmod(0o400)
        (self.base_dir / "rabbitmq.conf").write_text(self.rabbitmq_conf())
        (self.base_dir / "rabbitmq-env.conf").write_text("# intentionally empty: no system-wide settings\n")
        (self.base_dir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        state = {
            "nodename": self.nodename,
            "amqp_port": self.amqp_port,
            "dist_port": self.dist_port,
            "mgmt_port": self.mgmt_port,
            "epmd_port": self.epmd_port,
            "amqps_port": self.amqps_port,
        }
        (self.base_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    def rabbitmq_conf(self) -> str:
        """The text of rabbitmq.conf."""
        conf = (
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
            f"management.tcp.port = {self.mgmt_port}\n"
            f"max_message_size = {self.max_message_size}\n"
            "loopback_users.guest = true\n"
            # A task may train for longer than the 30 min default before it acks its message.
            "consumer_timeout = 86400000\n"
            "log.file.level = info\n"
        )
        if self.tls is not None:
            conf += (
                f"listeners.ssl.default = 127.0.0.1:{self.amqps_port}\n"
                f"ssl_options.cacertfile = {self.tls.ca}\n"
                f"ssl_options.certfile = {self.tls.cert}\n"
                f"ssl_options.keyfile = {self.tls.key}\n"
                "ssl_options.verify = verify_peer\n"
                "ssl_options.fail_if_no_peer_cert = false\n"
                "ssl_options.versions.1 = tlsv1.3\n"
                "ssl_options.versions.2 = tlsv1.2\n"
            )
        if self.cluster is not None:
            conf += cluster_conf(self.cluster)
        return conf


def load_state(base_dir: Path) -> dict[str, Any]:
    """What node.json in `base_dir` remembers of an earlier start (empty if there was none)."""
    try:
        return dict(json.loads((base_dir / STATE_FILE).read_text()))
    except (OSError, ValueError):
        return {}


def cluster_conf(cluster: ClusterSettings) -> str:
    """Peer discovery from a fixed list: a fresh node joins the first peer that answers, at boot (no
    stop_app / join_cluster / start_app round, which costs ~8 s a node)."""
    lines = ["cluster_formation.peer_discovery_backend = classic_config"]
    # A node cut off for longer than net_ticktime (60 s), e.g. paused, finds itself in the minority when it
    # comes back: the nodes of the larger side restart it and it rejoins by itself (autoheal). The default (ignore)
    # would leave the cluster split until someone restarted a side.
    lines += ["cluster_partition_handling = autoheal"]
    lines += [f"cluster_formation.classic_config.nodes.{i} = {peer}" for i, peer in enumerate(cluster.peers, 1)]
    lines += ["cluster_formation.randomized_startup_delay_range.min = 0"]
    lines += ["cluster_formation.randomized_startup_delay_range.max = 1"]
    return "\n".join(lines) + "\n"
