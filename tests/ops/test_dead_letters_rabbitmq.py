"""A worker with a provisioned site login refuses a message: it is dead-lettered once, and never loops.

The case needs no attacker: a task left in a site's queue by a run that ended (the site was stopped
mid-round) is refused by the restarted worker. Before, site logins could not write to fl.dlx, the broker
closed the channel, requeued the task (and the task in training), and the refusal repeated forever."""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from fl_broker.cli.flow import run_job, shutdown_all, wait_for_clients
from fl_broker.ops import provision
from fl_broker.protocol.control import RequestClient
from fl_broker.protocol.tasks import TaskMessage
from fl_broker.transport import connect
from fl_broker.wire import names
from fl_broker.wire.messages import Shareable
from tests.support.federation import make_app
from tests.support.processes import spawn

INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)

pytestmark = pytest.mark.rabbitmq


def stale_task(run: int = 99) -> bytes:
    task = Shareable(task_name="train", task_id=f"run{run}-train-round0")
    return TaskMessage(run=run, round=0, shareable=task).encode()


def dead_letters(provisioned) -> list[dict]:
    """Dead letters that came from site-2's task queue (there are others: with no server running, the
    worker's registration requests expire into the same queue)."""
    queue = names.task_queue("site-2")
    entries = provisioned.node.get_messages(provisioned.plan.vhost, names.DEAD_LETTER_QUEUE, count=1000)
    return [e for e in entries if _origin(e["properties"].get("headers") or {}) == queue]


def _origin(headers: dict) -> str | None:
    if names.REJECT_QUEUE_HEADER in headers:
        return headers[names.REJECT_QUEUE_HEADER]
    deaths = headers.get("x-death") or [{}]
    return deaths[0].get("queue")


def wait_for_dead_letters(provisioned, count: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(found := dead_letters(provisioned)) < count:
        assert time.monotonic() < deadline, f"expected {count} dead letters, found {len(found)}"
        time.sleep(0.2)
    return found


def run_with_a_stale_task(provisioned, processes, tmp_path) -> Path:
    """A stale task waits in site-2's queue; then the server and site-2's worker (from their env files) run
    hello-numpy-sag with site-2 alone. Returns the workspace."""
    publish_stale_task(provisioned)
    ws = tmp_path / "ws"
    processes.append(spawn(ws, "server", env=provisioned.env("server")))
    processes.append(
        spawn(ws, "worker", "--site", "site-2", "--heartbeat-interval", "1", env=provisioned.env("site-2"))
    )
    app = make_app(tmp_path, server_args={"min_clients": 1})
    transport = connect(provisioned.url("admin"))
    admin = RequestClient(transport)
    try:
        wait_for_clients(admin, 1, timeout=60, on_status=lambda s: None)
        assert run_job(admin, app, run=1, on_status=lambda s: None, timeout=120).phase == "finished"
        shutdown_all(admin)
    finally:
        admin.close()
        transport.close()
    np.testing.assert_array_equal(np.load(ws / "server" / "run_1" / "models" / "server.npy"), INITIAL + 10)
    return ws


def publish_stale_task(provisioned) -> None:
    server = connect(provisioned.url("server"))
    try:
        server.publish(names.TASK_EXCHANGE, "site-2", stale_task())
    finally:
        server.close()


def test_a_stale_task_is_dead_lettered_once_with_its_reason(provisioned, processes, tmp_path):
    ws = run_with_a_stale_task(provisioned, processes, tmp_path)
    [entry] = wait_for_dead_letters(provisioned, 1)
    time.sleep(2.0)  # a loop would show as more entries, redeliveries and refused publishes by now
    assert len(dead_letters(provisioned)) == 1
    headers = entry["properties"]["headers"]
    assert "task for run 99" in headers[names.REJECT_REASON_HEADER]
    assert entry["properties"]["user_id"] == "site-2"  # the copy is the site's own word
    log = (ws / "site-2" / "log.txt").read_text()
    assert "ACCESS_REFUSED" not in log
    assert provisioned.node.get_messages(provisioned.plan.vhost, names.task_queue("site-2")) == []


def test_without_write_on_fl_dlx_the_broker_dead_letters_it_once_instead(provisioned, processes, tmp_path):
    # Definitions provisioned before sites could write to fl.dlx: the worker's copy is refused, so it
    # hands the message to the queue's own dead-letter exchange (nack without requeue) instead of looping.
    old = provision.site_permission("site-2")
    old_write = old.write.replace("|" + names.DEAD_LETTER_EXCHANGE.replace(".", "\\."), "")
    assert old_write != old.write
    vhost = urllib.parse.quote(provisioned.plan.vhost, safe="")
    provisioned.node.api(
        "PUT", f"/api/permissions/{vhost}/site-2", {"configure": old.configure, "write": old_write, "read": old.read}
    )
    ws = run_with_a_stale_task(provisioned, processes, tmp_path)
    [entry] = wait_for_dead_letters(provisioned, 1)
    time.sleep(2.0)
    assert len(dead_letters(provisioned)) == 1
    assert entry["properties"]["headers"]["x-death"][0]["reason"] == "rejected"
    log = (ws / "site-2" / "log.txt").read_text()
    assert log.count("cannot dead-letter a message") == 1 and "task for run 99" in log
