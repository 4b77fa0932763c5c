"""`restart` with real processes on RabbitMQ: each program starts itself again in place (same pid, same
command line) and the sites register again; the server's log says who left, restarted or went quiet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.support.processes import ROOT, spawn

pytestmark = pytest.mark.rabbitmq


def admin(workspace: Path, url: str, commands: str) -> list[dict]:
    command = [sys.executable, "-m", "fl_broker.cli", "admin", "--workspace", str(workspace), "--broker", url]
    done = subprocess.run([*command, "--json", "-c", commands], cwd=ROOT, capture_output=True, text=True, timeout=60)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def registered(workspace: Path, url: str) -> dict[str, float]:
    """site -> registered heartbeat time, or {} while the server does not answer."""
    (status,) = admin(workspace, url, "check_status server") or [{}]
    return {row["site"]: row["last_heartbeat"] for row in status.get("registered_clients") or [] if row["alive"]}


def wait_until(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_restart_client_and_server_in_place(tmp_path: Path, rabbitmq_url: str, processes) -> None:
    server = spawn(tmp_path, "server", "--client-grace", "3", broker=rabbitmq_url)
    processes.append(server)
    workers = {}
    for site in ("site-1", "site-2"):
        workers[site] = spawn(tmp_path, "worker", "--site", site, "--heartbeat-interval", "1", broker=rabbitmq_url)
        processes.append(workers[site])
    wait_until(lambda: set(registered(tmp_path, rabbitmq_url)) == {"site-1", "site-2"}, "both sites")
    site1_log = tmp_path / "site-1" / "log.txt"
    starts_before = site1_log.read_text().count("site-1 registered with the server")

    (answer,) = admin(tmp_path, rabbitmq_url, "restart client site-1")
    assert answer["ok"] and answer["clients"]["site-1"]["result"]["message"] == "restarting"
    wait_until(lambda: site1_log.read_text().count("site-1 registered with the server") > starts_before, "site-1 back")
    assert workers["site-1"].poll() is None  # the same process (exec keeps the pid), running again
    password = urllib.parse.urlsplit(rabbitmq_url).password
    cmdline = Path(f"/proc/{workers['site-1'].pid}/cmdline").read_bytes()
    assert f":{password}@".encode() not in cmdline  # started from its real command line, scrubbed again
    assert "restarting: " in site1_log.read_text() and "worker site-1 stopped" not in site1_log.read_text()

    server_log = tmp_path / "server" / "log.txt"
    (answer,) = admin(tmp_path, rabbitmq_url, "restart server")
    assert answer["ok"] and answer["server"].startswith("restarting")
    wait_until(lambda: server_log.read_text().count("server ready") == 2, "the server back")
    wait_until(lambda: set(registered(tmp_path, rabbitmq_url)) == {"site-1", "site-2"}, "both sites again")
    assert server.poll() is None

    os.kill(workers["site-2"].pid, signal.SIGKILL)  # gone without a word: the server says so by itself
    wait_until(lambda: "site-2 is gone: no heartbeat for" in server_log.read_text(), "site-2 logged gone", 30)
    text = server_log.read_text()
    assert "site-1 left: restarting" in text and "restarting: " in text

    (answer,) = admin(tmp_path, rabbitmq_url, "shutdown client site-1")
    assert answer["ok"]
    (answer,) = admin(tmp_path, rabbitmq_url, "shutdown server")
    assert answer["ok"], answer
    for proc in (server, workers["site-1"]):
        assert proc.wait(timeout=30) == 0
    assert "site-1 left: shut down" in server_log.read_text()
