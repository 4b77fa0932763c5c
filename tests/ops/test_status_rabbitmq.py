"""`fl-broker status`: the broker's view through the management API, as the provisioned admin sees it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from fl_broker.transport import connect
from fl_broker.wire import names
from tests.ops.conftest import ROOT

pytestmark = pytest.mark.rabbitmq


def status(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "fl_broker.cli", "status", *args]
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)


def test_status_shows_depths_consumers_and_event_history(provisioned):
    env_file = str(provisioned.out / "admin.env")
    server = connect(provisioned.url("server"))
    site = connect(provisioned.url("site-1"), predeclared=True)
    try:
        for round_ in range(3):
            server.publish(names.EVENT_EXCHANGE, names.event_key(1, "round", round_, "done"), b"{}")
        server.publish(names.TASK_EXCHANGE, "site-2", b"task")
        subscription = site.consume(names.task_queue("site-1"), lambda d: None)
        deadline = time.monotonic() + 30  # the management API refreshes its numbers every few seconds
        while True:
            done = status("--env-file", env_file, "--json")
            assert done.returncode == 0, done.stdout + done.stderr
            report = json.loads(done.stdout)
            queues = {q["queue"]: q for q in report["queues"]}
            if (report["event_history"] == 3 and queues["fl.task.site-2"]["ready"] == 1
                    and queues["fl.task.site-1"]["consumers"] == 1) or time.monotonic() > deadline:  # fmt: skip
                break
            time.sleep(1)
        assert report["vhost"] == provisioned.plan.vhost
        assert report["sites"] == ["site-1", "site-2"]
        assert report["event_history"] == 3
        assert queues["fl.task.site-2"]["ready"] == 1 and queues["fl.task.site-2"]["owner"] == "site-2"
        assert queues["fl.task.site-1"]["consumers"] == 1
        assert {"publish_rate", "deliver_rate", "ack_rate", "unacked"} <= set(queues["fl.task.site-1"])
        table = status("--env-file", env_file)
        assert table.returncode == 0
        assert "fl.task.site-1" in table.stdout and "fl.control.site-2" in table.stdout
        assert f"events kept in {names.EVENT_HISTORY_QUEUE}: 3" in table.stdout
        subscription.cancel()
    finally:
        site.close()
        server.close()


def test_status_reports_a_refused_login_clearly(provisioned):
    done = status("--mgmt-url", provisioned.plan.mgmt_url, "--user", "site-1", "--password", "wrong")
    assert done.returncode == 1
    assert "HTTP 401" in done.stdout
