"""Privacy filters with secure aggregation: SecureTrainer's result_filters run on the plain update before
it is masked; a privacy filter in the site's task_result_filters, which would only see masked words,
refuses the result instead of passing it through unfiltered."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fl_broker.cli import main
from tests.secagg.harness import SECAGG_APP

pytest.importorskip("cryptography")

INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)
# noise 0: only the clipping acts, so the result is exact up to the quantization step
CLIP_ONLY = {"name": "GaussianPrivacy", "args": {"clip_norm": 0.3, "noise_multiplier": 0.0}}


def secagg_app(tmp_path: Path, edit) -> Path:
    app = tmp_path / "app"
    shutil.copytree(SECAGG_APP, app)
    path = app / "config" / "config_fed_client.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    return app


def test_secure_trainer_result_filters_clip_the_plain_update_before_masking(tmp_path):
    def edit(config):
        config["executors"][0]["executor"]["args"]["result_filters"] = [CLIP_ONLY]

    app = secagg_app(tmp_path, edit)
    assert main(["simulate", str(app), "--clients", "2", "--workspace", str(tmp_path / "ws")]) == 0
    final = np.load(tmp_path / "ws" / "server" / "run_1" / "models" / "server.npy")
    # each round's +1 on 9 weights has L2 norm 3, clipped to 0.3: +0.1 per weight, 10 rounds
    np.testing.assert_allclose(final, INITIAL + 1.0, atol=1e-4)


def test_a_privacy_filter_on_the_masked_update_refuses_it_with_the_reason(tmp_path, capsys):
    def edit(config):
        config["task_result_filters"] = [{"tasks": ["train"], "filters": [CLIP_ONLY]}]

    app = secagg_app(tmp_path, edit)
    assert main(["simulate", str(app), "--clients", "2", "--workspace", str(tmp_path / "ws")]) == 1
    out = capsys.readouterr().out
    assert "run 1: failed" in out and "0 of 2 masked updates arrived" in out
    site_log = (tmp_path / "ws" / "site-1" / "log.txt").read_text()
    assert "GaussianPrivacy cannot filter a secure-aggregation masked update" in site_log
    assert not (tmp_path / "ws" / "server" / "run_1" / "models" / "server.npy").exists()
