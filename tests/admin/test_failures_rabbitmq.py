"""The console's failure paths against a real RabbitMQ: wrong credentials, no server, a silent server,
and a connection the broker drops in the middle of a session."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from rich.console import Console

from admin.commands import Fetcher
from admin.console import AdminConsole, Identity
from admin.main import Connection

pytestmark = pytest.mark.rabbitmq

ROOT = Path(__file__).resolve().parents[2]


def admin(workspace: Path, url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "fl_broker.cli", "admin", "--workspace", str(workspace), "--broker", url, *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def with_password(url: str, password: str) -> str:
    parts = urllib.parse.urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def start_server(workspace: Path, url: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "fl_broker.cli", "server", "--workspace", str(workspace), "--broker", url]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_answering(workspace: Path, url: str) -> None:
    deadline = time.monotonic() + 30
    while admin(workspace, url, "--timeout", "2", "-c", "list_apps").returncode != 0:
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.5)


def test_wrong_credentials_are_one_line(tmp_path: Path, rabbitmq_url: str) -> None:
    done = admin(tmp_path, with_password(rabbitmq_url, "s3cr3t-pw"), "-c", "check_status server")
    assert done.returncode == 2
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("The broker refused the credentials of user 'guest'")
    assert "s3cr3t-pw" not in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_no_server_in_the_vhost(tmp_path: Path, rabbitmq_url: str) -> None:
    done = admin(tmp_path, rabbitmq_url, "--json", "--timeout", "2", "-c", "check_status server")
    (obj,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1 and not obj["ok"] and obj["error"].startswith("the server is not running")


def test_a_server_that_was_shut_down_is_reported_at_once(tmp_path: Path, rabbitmq_url: str) -> None:
    server = start_server(tmp_path, rabbitmq_url)
    try:
        wait_answering(tmp_path, rabbitmq_url)
        assert admin(tmp_path, rabbitmq_url, "-c", "shutdown server").returncode == 0
        assert server.wait(timeout=30) == 0  # its control queue stays, with no consumer
        started = time.monotonic()
        done = admin(tmp_path, rabbitmq_url, "--timeout", "30", "-c", "check_status server; list_apps")
        assert done.stdout.count("Error: the server is not running") == 2 and done.returncode == 1
        assert time.monotonic() - started < 10  # one process start, not 2 x 30 s of waiting
    finally:
        server.kill()
        server.wait()


def test_a_silent_server_times_out_clearly(tmp_path: Path, rabbitmq_url: str) -> None:
    server = start_server(tmp_path, rabbitmq_url)
    try:
        wait_answering(tmp_path, rabbitmq_url)
        server.send_signal(signal.SIGSTOP)  # alive and connected, but answers nothing
        started = time.monotonic()
        done = admin(tmp_path, rabbitmq_url, "--timeout", "1.5", "-c", "check_status server")
        assert done.returncode == 1 and "the server did not answer within 1.5 s" in done.stdout
        assert time.monotonic() - started < 15 and "Traceback" not in done.stderr
    finally:
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait()


def test_the_session_survives_a_dropped_connection(tmp_path: Path, rabbitmq_url: str, rabbitmq_node) -> None:
    server = start_server(tmp_path, rabbitmq_url)
    connection = Connection(rabbitmq_url, 10)
    try:
        wait_answering(tmp_path, rabbitmq_url)
        out = io.StringIO()
        fetcher = Fetcher(connection.client, timeout=10, transfer_dir=tmp_path)
        fetcher.reconnect = connection.reconnect
        console = AdminConsole(fetcher, Identity("guest", "here"), out=Console(file=out, width=200), interactive=False)
        assert console.execute("check_status server").ok  # type: ignore[union-attr]
        vhost = urllib.parse.unquote(urllib.parse.urlsplit(rabbitmq_url).path[1:])
        assert rabbitmq_node.close_connections(vhost, expect=2) >= 2  # the admin's and the server's
        deadline = time.monotonic() + 30
        while not console.execute("check_status server").ok:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, out.getvalue()
            time.sleep(0.5)
        assert "Engine status" in out.getvalue()
    finally:
        connection.close()
        server.kill()
        server.wait()
