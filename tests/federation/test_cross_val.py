"""apps/hello-numpy-cross-val end to end: Scatter-and-Gather, then cross-site evaluation of the global model
and every site's local model on every site; in one process (simulate) and as processes over RabbitMQ (poc)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fl_broker.cli import main
from tests.support.federation import run_poc

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
    done = run_poc(APP, tmp_path, rabbitmq_url)
    assert "run 1: finished" in done.stdout
    assert results_of(tmp_path) == expected_results()
