"""GaussianPrivacy in a run: its privacy parameters reach the run's metrics (run_N/metrics.jsonl) per round
and site, and the noise reaches the model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fl_broker.cli import _make_worker
from fl_broker.cli.simulate import simulate
from fl_broker.privacy.gaussian import gaussian_epsilon
from tests.support.filter_apps import INITIAL, chain, with_filters

DP = {"clip_norm": 1.5, "noise_multiplier": 0.5, "delta": 1e-5}


def test_gaussian_privacy_records_its_parameters_in_the_run_metrics(tmp_path):
    client = {"task_result_filters": chain({"name": "GaussianPrivacy", "args": {**DP, "seed": 3}})}
    app = with_filters(tmp_path / "apps", server={}, client=client, num_rounds=3)
    result = simulate(app, clients=2, workspace_root=tmp_path / "ws", make_worker=_make_worker)
    assert result.phase == "finished"
    run_dir = tmp_path / "ws" / "server" / "run_1"
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    sites = [line for line in lines if line["kind"] == "site"]
    assert sorted((line["round"], line["site"]) for line in sites) == [
        (r, site) for r in range(3) for site in ("site-1", "site-2")
    ]
    for line in sites:
        metrics, releases = line["metrics"], line["round"] + 1
        assert metrics["dp_clip_norm"] == 1.5 and metrics["dp_noise_multiplier"] == 0.5
        assert metrics["dp_noise_std"] == 0.75 and metrics["dp_delta"] == 1e-5
        assert metrics["dp_releases"] == releases
        assert metrics["dp_epsilon"] == pytest.approx(gaussian_epsilon(0.5, releases, 1e-5))
        assert "weight_mean" in metrics  # the trainer's own metrics travel with them
    rounds = {line["round"]: line["metrics"] for line in lines if line["kind"] == "round"}
    assert rounds[2]["dp_epsilon"] == pytest.approx(gaussian_epsilon(0.5, 3, 1e-5))  # both sites alike
    # Clipped to 1.5 (+0.5 a round, the update being nine ones) plus noise of std 0.75 a round: the two sites
    # share the seed, so the mean keeps all of it; 3 rounds give std 0.75 x sqrt(3) = 1.3 per weight.
    noise = np.load(run_dir / "models" / "server.npy") - (INITIAL + 1.5)
    assert np.all(noise != 0) and np.abs(noise).max() < 6 * 1.3
