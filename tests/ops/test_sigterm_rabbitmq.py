"""SIGTERM to a worker process while it trains: the task is not lost. The worker exits cleanly, a restarted
worker (as systemd's Restart= would start it) gets the task again or the server has its result, and the run
finishes with every round aggregated from both sites."""

from __future__ import annotations

import json
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fl_broker.cli.flow import run_job, shutdown_all, wait_for_clients
from fl_broker.protocol.control import RequestClient
from fl_broker.transport import connect
from tests.support.processes import APP, spawn

pytestmark = pytest.mark.rabbitmq

INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)


def slow_app(folder: Path, sleep_time: float) -> Path:
    app = folder / "hello-numpy-sag"
    shutil.copytree(APP, app)
    config_file = app / "config" / "config_fed_client.json"
    config = json.loads(config_file.read_text())
    config["executors"][0]["executor"]["args"] = {"sleep_time": sleep_time}
    config_file.write_text(json.dumps(config))
    server_file = app / "config" / "config_fed_server.json"
    server = json.loads(server_file.read_text())
    server["workflows"][0]["args"]["num_rounds"] = 3
    server_file.write_text(json.dumps(server))
    return app


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_sigterm_while_training_loses_no_task(tmp_path, rabbitmq_url, processes):
    app = slow_app(tmp_path / "apps", sleep_time=3.0)
    ws = tmp_path / "ws"
    env = {"FL_BROKER_URL": rabbitmq_url}
    processes.append(spawn(ws, "server", env=env))
    worker_args = ("worker", "--site", "site-1", "--heartbeat-interval", "1")
    site1 = spawn(ws, *worker_args, env=env)
    processes += [site1, spawn(ws, "worker", "--site", "site-2", "--heartbeat-interval", "1", env=env)]
    transport = connect(rabbitmq_url)
    admin = RequestClient(transport)
    outcome: dict[str, object] = {}
    try:
        wait_for_clients(admin, 2, timeout=60, on_status=lambda s: None)
        job = threading.Thread(
            target=lambda: outcome.update(result=run_job(admin, app, run=1, on_status=lambda s: None, timeout=180))
        )
        job.start()
        server_log = ws / "server" / "log.txt"
        _wait_for(lambda: "round 1: sent 'train'" in server_log.read_text(), 60, "round 1 to start")
        time.sleep(1.0)  # site-1 is in the middle of its 3 s training step
        stopped_at = time.monotonic()
        site1.send_signal(signal.SIGTERM)
        assert site1.wait(timeout=30) == 0, site1.stderr.read().decode()[-3000:]
        print(f"\nworker stopped {time.monotonic() - stopped_at:.2f} s after SIGTERM")
        processes.append(spawn(ws, *worker_args, env=env))  # what Restart=on-failure / a reboot would do
        job.join(timeout=180)
        result = outcome["result"]
        assert result.phase == "finished"  # type: ignore[attr-defined]
        shutdown_all(admin)
    finally:
        admin.close()
        transport.close()
    np.testing.assert_array_equal(np.load(ws / "server" / "run_1" / "models" / "server.npy"), INITIAL + 3)
    text = server_log.read_text()
    both = re.findall(r"aggregated 2 contributions", text)
    assert len(both) == 3, f"not every round was aggregated from both sites:\n{text[-4000:]}"
