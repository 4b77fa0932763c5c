"""hello-numpy-sag over a real RabbitMQ node, with the server and the workers as separate processes."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fl_broker.transport import connect
from tests.support.federation import broken_app, refusing_app
from tests.support.processes import APP, ROOT, assert_exited_cleanly, assert_hello_run_finished, run_hello_job, spawn
from tests.support.processes import HELLO_INITIAL as INITIAL

pytestmark = pytest.mark.rabbitmq


def rounds_logged(log_file: Path) -> dict[int, list]:
    """round -> weights, from the trainer's log lines."""
    found = {}
    for match in re.finditer(r"round (\d+): new weights (\[\[.*?\]\])", log_file.read_text()):
        found[int(match.group(1))] = ast.literal_eval(match.group(2))
    return found


def test_hello_numpy_sag_with_separate_processes(tmp_path, rabbitmq_url, processes):
    processes.append(spawn(tmp_path, "server", broker=rabbitmq_url))
    for site in ("site-1", "site-2"):
        processes.append(spawn(tmp_path, "worker", "--site", site, "--heartbeat-interval", "1", broker=rabbitmq_url))
    assert run_hello_job(connect(rabbitmq_url)).phase == "finished"
    assert_exited_cleanly(processes)

    assert_hello_run_finished(tmp_path)
    assert "run 1 ended: finished" in (tmp_path / "server" / "log.txt").read_text()
    for site in ("site-1", "site-2"):
        weights_by_round = rounds_logged(tmp_path / site / "log.txt")
        assert sorted(weights_by_round) == list(range(10))
        for r, weights in weights_by_round.items():
            np.testing.assert_array_equal(np.array(weights, dtype=np.float32), INITIAL + r + 1)


def test_poc_command_runs_the_job_and_leaves_no_process(tmp_path, rabbitmq_url):
    started = time.monotonic()
    command = [sys.executable, "-m", "fl_broker.cli", "poc", str(APP), "--clients", "2"]
    command += ["--workspace", str(tmp_path), "--broker", rabbitmq_url]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "run 1: finished" in done.stdout
    assert "[[11. 12. 13.]" in done.stdout and "[17. 18. 19.]]" in done.stdout
    assert str(tmp_path / "server" / "run_1" / "models" / "server.npy") in done.stdout.replace("\n", "")
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes left behind: {leftovers}"
    assert time.monotonic() - started < 180


def test_poc_on_its_own_node_ends_promptly_quietly_and_unwrapped(tmp_path):
    workspace = tmp_path / ("a-workspace-path-long-enough-to-wrap-at-eighty-columns" * 2)
    command = [sys.executable, "-m", "fl_broker.cli", "poc", str(APP), "--clients", "2", "--workspace", str(workspace)]
    poc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert poc.stdout is not None
    lines, shown_at = [], None
    for line in poc.stdout:  # a pipe: no terminal, 80 columns for rich
        lines.append(line.rstrip("\n"))
        if line.startswith("site-2 saved its last weights"):
            shown_at = time.monotonic()
    assert poc.wait(timeout=60) == 0, "\n".join(lines)
    assert shown_at is not None and time.monotonic() - shown_at < 4, "\n".join(lines)  # no 9 s stop of the node
    model = workspace / "server" / "run_1" / "models" / "server.npy"
    assert f"final global model ({model}):" in lines  # one line each, however long
    assert f"site-1 saved its last weights to {workspace / 'site-1' / 'run_1' / 'model' / 'best_numpy.npy'}" in lines
    assert any("management UI is at http://127.0.0.1:" in line and "(login guest / guest)" in line for line in lines)
    assert "WARNING" not in (workspace / "poc.log").read_text()  # no NOT_FOUND for fl.control on a first run


def test_poc_of_a_broken_app_is_one_line_not_a_traceback(tmp_path, rabbitmq_url):
    app = broken_app(tmp_path)
    command = [sys.executable, "-m", "fl_broker.cli", "poc", str(app), "--clients", "2"]
    command += ["--workspace", str(tmp_path / "ws"), "--broker", rabbitmq_url]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    (failed,) = [line for line in done.stdout.splitlines() if "failed" in line]
    assert failed.startswith("poc failed: start_app failed: ConfigError: config_fed_server.json: components[0]")
    assert failed.endswith("failed: RuntimeError('broken on purpose')")


def test_poc_of_a_run_that_accepted_nothing_exits_1_with_the_reason(tmp_path, rabbitmq_url):
    app = refusing_app(tmp_path / "refusing", num_rounds=1)
    command = [sys.executable, "-m", "fl_broker.cli", "poc", str(app), "--clients", "2"]
    command += ["--workspace", str(tmp_path / "ws"), "--broker", rabbitmq_url]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    reason = "round 0: 0 of 2 results accepted: site-1 return code BAD_TASK_DATA; site-2 return code BAD_TASK_DATA"
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("run 1:")]
    assert line.startswith("run 1: failed in ") and line.endswith(f" s: {reason}")
