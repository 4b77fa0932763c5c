"""What a run of tests/flare_apps/hello-flare must leave behind, exactly (shared by the simulate and the
RabbitMQ tests)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from fl_broker.flare.apis.dxo import DataKind, from_bytes

ROOT = Path(__file__).resolve().parents[2]
FLARE_APP = ROOT / "tests" / "flare_apps" / "hello-flare"
INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)
MODELS = ("SRV_server", "site-1", "site-2")


def copy_app(folder: Path, num_rounds: int = 3) -> Path:
    """hello-flare with `num_rounds` rounds of Scatter-and-Gather."""
    app = folder / "hello-flare"
    shutil.copytree(FLARE_APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    config = app / "config" / "config_fed_server.json"
    config.write_text(config.read_text().replace('"num_rounds": 3', f'"num_rounds": {num_rounds}'))
    return app


def run_events(run_dir: Path) -> list[str]:
    """What the app's persistor saw (events and loads), in order."""
    return (run_dir / "flare_events.txt").read_text().splitlines()


def fresh_run_events(rounds: int) -> list[str]:
    """The persistor's view of a run of `rounds` rounds that starts at round 0 and is not resumed."""
    lines = ["_start_run round=None", "load start_round=0 initial", "_initial_model_loaded round=None"]
    for r in range(rounds):
        lines += [f"_round_started round={r}", "save meta={'source': 'initial'}", f"_round_done round={r}"]
    return [*lines, "_cross_val_init round=None", "_end_run round=None"]


def assert_exact_results(run_dir: Path, rounds: int = 3, start: np.ndarray = INITIAL) -> None:
    """The model after `rounds` WEIGHT_DIFF rounds of +1 from `start` (the excluded array unchanged) and the
    cross-site matrix of its weight sums, in the JSON and in the result DXOs FLARE's formatter reads."""
    with np.load(run_dir / "models" / "server.npz") as saved:
        np.testing.assert_array_equal(saved["numpy_key"], start + rounds)
        assert saved["numpy_key"].dtype == np.float32
        np.testing.assert_array_equal(saved["frozen_key"], np.array([100.0], dtype=np.float32))
    expected = float((start + rounds).sum())
    matrix = json.loads((run_dir / "cross_site_val" / "cross_val_results.json").read_text())
    assert matrix == {site: {model: {"weight_sum": expected} for model in MODELS} for site in ("site-1", "site-2")}
    for site in ("site-1", "site-2"):
        for model in MODELS:
            dxo = from_bytes((run_dir / "cross_site_val" / "result_shareables" / f"{site}_{model}").read_bytes())
            assert dxo.data_kind == DataKind.METRICS and dxo.data == {"weight_sum": expected}


def formatter_line(rounds: int = 3) -> str:
    """What the app's formatter says, as the server logs it."""
    value = f"{float((INITIAL + rounds).sum()):g}"
    cells = " ".join(f"{site}/{model}={value}" for site in ("site-1", "site-2") for model in MODELS)
    return f"cross-site evaluation (NPFormatter): {cells}"
