"""deploy/rabbitmq/: the example rabbitmq.conf (TLS section switched on) and enabled_plugins boot a real node,
and definitions.json loads into it and gives the topology the programs expect."""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
import urllib.request
from pathlib import Path

import pytest

from fl_broker.ops.localnode import RABBITMQ_BIN, LocalNode, free_port
from fl_broker.wire import names
from tests.ops.test_tls_rabbitmq import make_pki

pytestmark = pytest.mark.rabbitmq

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "rabbitmq"


class DeployConfigNode(LocalNode):
    """A private node that runs deploy/rabbitmq's files, with ports and certificate paths made local."""

    def __init__(self, base_dir: Path, pki: dict[str, Path]) -> None:
        super().__init__(base_dir)
        self.pki = pki
        self.tls_port, self.prometheus_port = free_port(), free_port()

    def _write_files(self) -> None:
        super()._write_files()
        conf = (DEPLOY / "rabbitmq.conf").read_text()
        conf = re.sub(r"^# (listeners\.ssl|ssl_options\.)", r"\1", conf, flags=re.M)  # switch TLS on
        replacements = {
            "127.0.0.1:5672": f"127.0.0.1:{self.amqp_port}",
            "listeners.ssl.default = 5671": f"listeners.ssl.default = 127.0.0.1:{self.tls_port}",
            "management.tcp.port = 15672": f"management.tcp.port = {self.mgmt_port}",
            "prometheus.tcp.port = 15692": f"prometheus.tcp.port = {self.prometheus_port}",
            "/etc/rabbitmq/tls/ca.pem": str(self.pki["ca_pem"]),
            "/etc/rabbitmq/tls/server.pem": str(self.pki["server_pem"]),
            "/etc/rabbitmq/tls/server.key": str(self.pki["server_key"]),
            "disk_free_limit.absolute = 2GB": "disk_free_limit.absolute = 50MB",
        }
        for old, new in replacements.items():
            assert old in conf, old
            conf = conf.replace(old, new)
        (self.base_dir / "rabbitmq.conf").write_text(conf)
        (self.base_dir / "enabled_plugins").write_text((DEPLOY / "enabled_plugins").read_text())


def test_deploy_files_boot_a_node_with_tls_prometheus_and_the_topology(tmp_path):
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        pytest.skip("rabbitmq-server is not installed")
    pki = make_pki(tmp_path / "pki")
    node = DeployConfigNode(tmp_path / "node", pki)
    with node:
        listeners = {(x["protocol"], x["port"]) for x in node.api("GET", "/api/overview")["listeners"]}
        assert ("amqp/ssl", node.tls_port) in listeners and ("http/prometheus", node.prometheus_port) in listeners
        context = ssl.create_default_context(cafile=str(pki["ca_pem"]))
        with socket.create_connection(("127.0.0.1", node.tls_port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
        with urllib.request.urlopen(f"http://127.0.0.1:{node.prometheus_port}/metrics", timeout=10) as resp:
            assert b"rabbitmq_" in resp.read()
        node.api("POST", "/api/definitions", json.loads((DEPLOY / "definitions.json").read_text()))
        queues = {q["name"] for q in node.api("GET", "/api/queues/%2Ffl")}
        assert {names.SERVER_RESULT_QUEUE, names.task_queue("site-1"), names.task_queue("site-2")} <= queues
        history = node.api("GET", "/api/queues/%2Ffl/fl.event.history")
        assert history["arguments"] == {
            "x-max-length": names.EVENT_HISTORY_LENGTH,
            "x-overflow": "drop-head",
            "x-queue-type": "classic",
        }
        for queue, policy in zip((names.DEAD_LETTER_QUEUE, names.DROPPED_QUEUE), names.POLICIES, strict=True):
            assert _policy_of(node, queue) == policy.name


def _policy_of(node: LocalNode, queue: str, timeout: float = 15.0) -> str | None:
    """The policy the management API reports for `queue` (it appears with the queue's first stats)."""
    deadline = time.monotonic() + timeout
    while True:
        policy = node.api("GET", f"/api/queues/%2Ffl/{queue}").get("policy")
        if policy or time.monotonic() > deadline:
            return policy
        time.sleep(0.5)
