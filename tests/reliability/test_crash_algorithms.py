"""A server killed just before any write of a FedAdam run or of a cyclic run resumes to exactly the weights of
the run that was never killed: the optimizer's moments and the relay are committed with the model (the
harness of test_crash_consistency: a forked child killed before its n-th write, for every n)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fl_broker.fl.checkpoint import read_checkpoint
from tests.reliability.test_crash_consistency import FINISHED, kill_points, run_in_child
from tests.support.federation import make_app, set_workflow

INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)


def fedadam_app(folder: Path, num_rounds: int) -> Path:
    app = make_app(folder, server_args={"num_rounds": num_rounds})
    config_file = app / "config" / "config_fed_server.json"
    config = json.loads(config_file.read_text())
    config["components"][1] = {"id": "shareable_generator", "path": "fl_broker.fl.fedopt.FedAdam", "args": {"eta": 0.5}}
    config_file.write_text(json.dumps(config))
    return app


def test_a_killed_fedadam_run_resumes_to_the_uninterrupted_weights(tmp_path):
    app = fedadam_app(tmp_path / "fedadam", num_rounds=4)
    reference_dir = tmp_path / "reference" / "run_1"
    assert run_in_child(reference_dir, app_dir=app) == FINISHED
    reference = np.load(reference_dir / "models" / "server.npy")
    assert not np.array_equal(reference, INITIAL + 4)  # FedAdam's steps, not FedAvg's

    def check(run_dir: Path) -> None:
        np.testing.assert_array_equal(np.load(run_dir / "models" / "server.npy"), reference)
        checkpoint = read_checkpoint(run_dir)
        assert checkpoint is not None and checkpoint.next_round == 4
        assert checkpoint.state["shareable_generator"]["steps"] == 4

    assert kill_points(tmp_path, "fedadam", torn=False, app_dir=app, check=check) >= 4 * 3


@pytest.mark.parametrize("torn", [False, True], ids=["clean", "torn"])
def test_a_killed_cyclic_run_resumes_to_the_exact_weights(tmp_path, torn):
    app = make_app(tmp_path / "cyclic")
    set_workflow(app, "fl_broker.fl.cyclic.CyclicController", {"num_rounds": 3, "task_check_period": 0.01})

    def check(run_dir: Path) -> None:  # 2 sites x 3 cycles, each adding 1
        np.testing.assert_array_equal(np.load(run_dir / "models" / "server.npy"), INITIAL + 6)
        checkpoint = read_checkpoint(run_dir)
        assert checkpoint is not None and checkpoint.next_round == 6
        np.testing.assert_array_equal(checkpoint.model["numpy_key"], INITIAL + 6)

    assert kill_points(tmp_path, f"cyclic-{torn}", torn=torn, app_dir=app, check=check) >= 6 * 2
