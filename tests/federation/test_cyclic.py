"""Cyclic weight transfer end to end with three sites: in one process (simulate), as processes over the real
RabbitMQ node (poc), and with the server killed mid-run and restarted. hello-numpy-sag's trainer adds 1 at
each hop, so 3 sites x 2 cycles give the initial model + 6, and each site's last model shows when it
trained: site-1 last saw it at +4, site-2 at +5, site-3 at +6."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fl_broker.cli import _make_worker
from fl_broker.cli.simulate import simulate
from tests.support.federation import ProcessFederation, make_app, set_workflow

ROOT = Path(__file__).resolve().parents[2]
INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)
SITES = ("site-1", "site-2", "site-3")
CYCLIC = "fl_broker.fl.cyclic.CyclicController"


def cyclic_app(folder: Path, num_rounds: int = 2, sleep_time: float = 0) -> Path:
    app = make_app(folder, client_args={"sleep_time": sleep_time})
    set_workflow(app, CYCLIC, {"num_rounds": num_rounds, "min_clients": 3, "task_assignment_timeout": 10})
    return app


def assert_exact(workspace: Path, num_rounds: int = 2) -> None:
    final = np.load(workspace / "server" / "run_1" / "models" / "server.npy")
    assert final.dtype == np.float32
    np.testing.assert_array_equal(final, INITIAL + 3 * num_rounds)
    for k, site in enumerate(SITES, 1):  # the sites in turn: site-k trained hop k of the last cycle
        last = np.load(workspace / site / "run_1" / "model" / "best_numpy.npy")
        np.testing.assert_array_equal(last, INITIAL + 3 * (num_rounds - 1) + k)


def test_cyclic_in_one_process_with_three_sites(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="fl_broker.fl.cyclic"):
        result = simulate(cyclic_app(tmp_path), clients=3, workspace_root=tmp_path / "ws", make_worker=_make_worker)
    assert result.phase == "finished"
    assert_exact(tmp_path / "ws")
    assert "round 0: the model visits site-1 -> site-2 -> site-3" in caplog.text


@pytest.mark.rabbitmq
def test_cyclic_as_processes_over_rabbitmq_with_three_sites(tmp_path, rabbitmq_url):
    command = [sys.executable, "-m", "fl_broker.cli", "poc", str(cyclic_app(tmp_path)), "--clients", "3"]
    command += ["--workspace", str(tmp_path / "ws"), "--broker", rabbitmq_url]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "run 1: finished" in done.stdout
    assert_exact(tmp_path / "ws")


@pytest.mark.rabbitmq
def test_a_server_killed_mid_cycle_resumes_at_its_hop_over_rabbitmq(tmp_path, rabbitmq_url):
    fed = ProcessFederation(tmp_path / "ws", rabbitmq_url, client_grace=3.0)
    try:
        fed.start_server()
        fed.start_workers(SITES)
        fed.start_job(cyclic_app(tmp_path, num_rounds=3, sleep_time=0.3))
        fed.wait_for(lambda s: (s["current_round"] or 0) >= 1, what="round 1")
        time.sleep(0.45)  # into round 1's second hop (each takes 0.3 s)
        fed.kill("server")
        fed.start_server()
        status = fed.wait_finished()
        assert status["phase"] == "finished"
        assert_exact(fed.workspace, num_rounds=3)
        log = fed.log("server")
        resumed_at = re.search(r"resuming run 1 at hop (\d+) \(round (\d+)\)", log)
        assert resumed_at is not None, log[-3000:]
        assert 3 <= int(resumed_at.group(1)) < 9  # after round 0, before the end
        assert "skipped" not in log  # no hop was lost or done twice: the relay went on where it stopped
    finally:
        fed.close()
