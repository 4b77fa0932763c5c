"""apps/hello-numpy-cross-val end to end: Scatter-and-Gather, then cross-site evaluation of the global model
and every site's local model on every site; in one process (simulate) and as processes over RabbitMQ (poc)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fl_broker.cli import main

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "hello-numpy-cross-val"
TRAINED = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float64) + 3  # after its 3 rounds


def expected_results() -> dict:
    """Every model is INITIAL + 3 (the sites keep what they last sent); site-N's target is 10 * N."""
    metrics = {
        site: {"weight_mean": float(TRAINED.mean()), "mean_abs_error": float(np.abs(TRAINED - 10.0 * n).mean())}
        for n, site in ((1, "site-1"), (2, "site-2"))
    }
    return {site: dict.fromkeys(("SRV_global_model", "site-1", "site-2"), metrics[site]) for site in metrics}


def results_of(workspace: Path) -> dict:
    return json.loads((workspace / "server" / "run_1" / "cross_site_val" / "cross_val_results.json").read_text())


def test_hello_numpy_cross_val_in_one_process(tmp_path, capsys):
    assert main(["simulate", str(APP), "--clients", "2", "--workspace", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "run 1: finished" in out
    assert (
        f"cross-site evaluation: {tmp_path / 'server' / 'run_1' / 'cross_site_val' / 'cross_val_results.json'}" in out
    )
    np.testing.assert_array_equal(np.load(tmp_path / "server" / "run_1" / "models" / "server.npy"), TRAINED)
    assert results_of(tmp_path) == expected_results()


@pytest.mark.rabbitmq
def test_hello_numpy_cross_val_as_processes_over_rabbitmq(tmp_path, rabbitmq_url):
    command = [sys.executable, "-m", "fl_broker.cli", "poc", str(APP), "--clients", "2"]
    command += ["--workspace", str(tmp_path), "--broker", rabbitmq_url]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "run 1: finished" in done.stdout
    assert results_of(tmp_path) == expected_results()
