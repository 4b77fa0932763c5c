"""apps/hello-pt end to end (needs the pt extra, which scripts/test.sh and CI install): FedAvg of a CNN on
two label-skewed shards of the digits data, cross-site evaluation, and the global model's test accuracy,
which beats each site trained alone; in one process (simulate) and as processes over RabbitMQ (poc)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the pt extra is not installed (pip install -e '.[pt]')")
pytest.importorskip("sklearn", reason="the pt extra is not installed (pip install -e '.[pt]')")

from bench.hello_pt_baseline import trained_alone  # noqa: E402
from fl_broker.cli import main  # noqa: E402
from fl_broker.pt.persistor import read_model_file  # noqa: E402
from tests.support.federation import run_poc  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "hello-pt"
SITES = ("site-1", "site-2")
MODELS = {"SRV_global_model", *SITES}
ROUND_METRICS = {"loss", "accuracy", "samples", "train_loss", "train_samples", "global_loss", "global_accuracy"}


def check_run(workspace: Path) -> dict:
    """What every hello-pt run leaves behind; returns the global test report."""
    run_dir = workspace / "server" / "run_1"
    report = json.loads((run_dir / "global_test.json").read_text())
    assert report["samples"] == 359 and report["accuracy"] >= 0.9
    assert sorted(read_model_file(run_dir / "app_server" / "FL_global_model.pt")) == [
        "conv1.bias", "conv1.weight", "conv2.bias", "conv2.weight", "fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"
    ]  # fmt: skip
    matrix = json.loads((run_dir / "cross_site_val" / "cross_val_results.json").read_text())
    assert set(matrix) == set(SITES)
    for site in SITES:
        assert set(matrix[site]) == MODELS
        assert all(set(metrics) == {"loss", "accuracy", "samples"} for metrics in matrix[site].values())
        assert matrix[site]["SRV_global_model"]["accuracy"] >= 0.85
        log = (workspace / site / "log.txt").read_text()
        assert log.count("validation accuracy") == 10  # local validation, every round
    check_recorded_metrics(run_dir)
    return report


def check_recorded_metrics(run_dir: Path) -> None:
    """The server recorded each site's metrics of every round, weighted by its training images."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    per_site = [r for r in records if r["kind"] == "site"]
    assert sorted((r["round"], r["site"]) for r in per_site) == [(n, s) for n in range(10) for s in SITES]
    for record in per_site:
        assert set(record["metrics"]) == ROUND_METRICS
        assert record["weight"] == record["metrics"]["train_samples"]
    rounds = [r for r in records if r["kind"] == "round"]
    assert [r["round"] for r in rounds] == list(range(10))
    assert rounds[-1]["metrics"]["accuracy"] > rounds[0]["metrics"]["accuracy"]


def test_hello_pt_in_one_process_beats_every_site_trained_alone(tmp_path, capsys):
    assert main(["simulate", str(APP), "--clients", "2", "--workspace", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "run 1: finished" in out
    assert "global model test: accuracy 0.9" in out and "on 359 held-out samples" in out
    report = check_run(tmp_path)
    for site in SITES:  # the same network, epochs and seeds on the site's own shard only
        alone = trained_alone(APP, (site,))
        assert report["accuracy"] > alone["accuracy"] + 0.05, (site, alone, report)


@pytest.mark.rabbitmq
def test_hello_pt_as_processes_over_rabbitmq(tmp_path, rabbitmq_url):
    done = run_poc(APP, tmp_path, rabbitmq_url)
    assert "run 1: finished" in done.stdout and "global model test: accuracy 0.9" in done.stdout
    check_run(tmp_path)
