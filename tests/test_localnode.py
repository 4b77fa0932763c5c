"""fl_broker.ops.localnode: the private node the suite and `fl-broker poc` run on."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from fl_broker.ops import localnode
from fl_broker.ops.localnode import LocalNode, free_port, main


def test_urls_quote_the_vhost(tmp_path: Path) -> None:
    node = LocalNode(tmp_path, amqp_port=5999, mgmt_port=15999)
    assert node.amqp_url() == "amqp://guest:guest@127.0.0.1:5999/%2Ffl"
    assert node.amqp_url("/", user="a", password="b") == "amqp://a:b@127.0.0.1:5999/%2F"
    assert node.mgmt_url == "http://127.0.0.1:15999"


def test_status_of_a_node_that_never_started(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--dir", str(tmp_path)]) == 1
    assert "not running" in capsys.readouterr().out


def test_free_ports_are_below_the_ephemeral_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a node is down, any process that binds port 0 may get a port of the ephemeral range: its own
    ports are never taken from there."""
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("32768\t60999\n")
    monkeypatch.setattr(localnode, "_EPHEMERAL_RANGE", ranges)
    ports = {free_port() for _ in range(20)}
    assert all(localnode.LOWEST_PORT <= port < 32768 for port in ports), ports
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))  # free indeed
    ranges.write_text("1024\t65535\n")  # no room below it: any free port
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def _external_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))  # no packet is sent; picks the outgoing interface
            address = str(sock.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.mark.rabbitmq
def test_suite_node_listens_on_loopback_only(rabbitmq_node: Any) -> None:
    node = rabbitmq_node.node
    if node is None:
        pytest.skip("external broker (FL_BROKER_URL)")
    address = _external_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    for port in (node.amqp_port, node.mgmt_port, node.dist_port):
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=2).close()
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.rabbitmq
def test_a_throwaway_node_stops_at_once_and_starts_again(tmp_path: Path, rabbitmq_node: Any) -> None:
    if rabbitmq_node.node is None:
        pytest.skip("external broker (FL_BROKER_URL)")
    node = LocalNode(tmp_path / "node").start()
    try:
        url = node.create_vhost("/kept")
        started = time.monotonic()
        assert main(["stop", "--dir", str(node.base_dir), "--fast"]) == 0
        assert time.monotonic() - started < 3 and not node.is_running()  # graceful: 6-9 s
        node.start()  # recovers its files as after a crash
        assert node.amqp_url("/kept") == url and "/kept" in [v["name"] for v in node.api("GET", "/api/vhosts")]
    finally:
        node.stop(fast=True)
    assert not node.is_running()
