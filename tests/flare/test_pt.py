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


NET = """
import torch


class Net(torch.nn.Module):
    def __init__(self, width=3):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(width, 2)
"""


def pt_app(folder, persistor: dict):
    """A FLARE hello-pt style server config: the persistor by FLARE's name, the network nested in its args."""
    import json

    (folder / "config").mkdir(parents=True)
    (folder / "custom").mkdir()
    (folder / "custom" / "net.py").write_text(NET)
    workflow = {"id": "sag", "name": "ScatterAndGather", "args": {"min_clients": 1, "num_rounds": 1}}
    components = [
        persistor,
        {"id": "shareable_generator", "name": "FullModelShareableGenerator"},
        {"id": "aggregator", "name": "InTimeAccumulateWeightedAggregator", "args": {"expected_data_kind": "WEIGHTS"}},
    ]
    config = {"format_version": 2, "components": components, "workflows": [workflow]}
    (folder / "config" / "config_fed_server.json").write_text(json.dumps(config))
    return folder


def test_flares_pt_file_model_persistor_name_is_fl_brokers_with_the_nested_network(tmp_path):
    from fl_broker.apps.loader import load_server_app
    from fl_broker.fl.context import RunContext
    from fl_broker.pt.persistor import PTFileModelPersistor

    spec = {"id": "persistor", "name": "PTFileModelPersistor", "args": {"model": {"path": "net.Net"}}}
    app = load_server_app(pt_app(tmp_path / "app", spec))
    run_dir = tmp_path / "server" / "run_1"
    context = RunContext("server", 1, run_dir, run_dir / "app_server")
    try:
        persistor = app.components["persistor"]
        assert type(persistor) is PTFileModelPersistor
        weights = persistor.load_model(context)
        assert sorted(weights) == ["fc.bias", "fc.weight"] and weights["fc.weight"].shape == (2, 3)
        persistor.save_model({**weights, "fc.bias": np.array([7.0, 8.0], dtype=np.float32)}, context)
        saved = torch.load(run_dir / "app_server" / "FL_global_model.pt", weights_only=True)
        assert saved["model"]["fc.bias"].tolist() == [7.0, 8.0]
    finally:
        app.end_run()


def test_the_pt_persistor_without_torch_names_the_extra(tmp_path, monkeypatch):
    from fl_broker.apps import builtins
    from fl_broker.apps.loader import load_server_app
    from fl_broker.errors import ConfigError

    path = "nvflare.app_common.pt.pt_file_model_persistor.PTFileModelPersistor"
    monkeypatch.setitem(builtins.FLARE_NEEDS, path, ("no_such_module_here", "pt"))
    spec = {"id": "persistor", "path": path, "args": {"model": {"path": "net.Net"}}}
    with pytest.raises(ConfigError, match=rf"components\[0\]\.path: '{path}' needs the optional extra 'pt' "):
        load_server_app(pt_app(tmp_path / "app", spec))
