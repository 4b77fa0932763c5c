"""FLARE's PyTorch checkpoint layout (nvflare.app_common.pt.pt_model_persistence_format_manager), with torch."""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fl_broker.flare.app_common.abstract.model import make_model_learnable  # noqa: E402
from fl_broker.flare.app_common.pt.pt_fed_utils import PTModelPersistenceFormatManager as FromFedUtils  # noqa: E402
from fl_broker.flare.app_common.pt.pt_model_persistence_format_manager import (  # noqa: E402
    PTModelPersistenceFormatManager,
)


def state() -> dict:
    return {"fc.weight": torch.ones(2, 3), "fc.bias": torch.zeros(2), "bn.running_mean": torch.full((2,), 5.0)}


def test_a_bare_state_dict_becomes_numpy_weights_without_the_excluded_ones():
    manager = PTModelPersistenceFormatManager(state(), default_train_conf={"train": {"model": "Net"}})
    learnable = manager.to_model_learnable(re.compile(r"^bn\."))
    assert sorted(learnable["weights"]) == ["fc.bias", "fc.weight"] and learnable["meta"] is None
    assert isinstance(learnable["weights"]["fc.weight"], np.ndarray)
    np.testing.assert_array_equal(learnable["weights"]["fc.weight"], np.ones((2, 3), dtype=np.float32))
    assert manager.train_conf == {"train": {"model": "Net"}} and manager.get_persist_model_format() == "pt_checkpoint"
    assert FromFedUtils is PTModelPersistenceFormatManager


def test_update_keeps_what_was_not_learned_and_the_file_round_trips(tmp_path):
    saved = {"model": state(), "meta_props": {"epoch": 1}, "train_conf": {"lr": 0.1}, "extra": "kept"}
    manager = PTModelPersistenceFormatManager(saved)
    manager.update(make_model_learnable({"fc.bias": np.array([1.0, 2.0], dtype=np.float32)}, {"epoch": 2}))
    out = manager.to_persistence_dict()
    assert list(out) == ["model", "meta_props", "train_conf", "extra"] and out["meta_props"] == {"epoch": 2}
    assert all(isinstance(value, torch.Tensor) for value in out["model"].values())
    torch.save(out, tmp_path / "FL_global_model.pt")
    back = PTModelPersistenceFormatManager(torch.load(tmp_path / "FL_global_model.pt", weights_only=True))
    weights = back.to_model_learnable(None)["weights"]
    np.testing.assert_array_equal(weights["fc.bias"], [1.0, 2.0])
    np.testing.assert_array_equal(weights["bn.running_mean"], [5.0, 5.0])  # not learned: unchanged
    with pytest.raises(ValueError, match="expected a ModelLearnable"):
        manager.update({"weights": {}, "meta": {}})  # type: ignore[arg-type]
