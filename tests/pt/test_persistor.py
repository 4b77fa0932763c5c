"""fl_broker/pt/persistor.py: PTFileModelPersistor, FLARE's arguments, files in the deployed app's folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the pt extra is not installed (pip install -e '.[pt]')")

from fl_broker.apps.loader import load_server_app  # noqa: E402
from fl_broker.errors import ConfigError  # noqa: E402
from fl_broker.fl.context import RunContext  # noqa: E402
from fl_broker.pt.persistor import PTFileModelPersistor, read_model_file  # noqa: E402

LINEAR = {"path": "torch.nn.Linear", "args": {"in_features": 3, "out_features": 2}}
APP = Path(__file__).resolve().parents[2] / "apps" / "hello-pt"


def context_in(tmp_path: Path) -> RunContext:
    app_dir = tmp_path / "run_1" / "app_server"
    app_dir.mkdir(parents=True)
    return RunContext("server", 1, tmp_path / "run_1", app_dir)


def test_the_initial_model_is_the_modules_own_weights_as_arrays(tmp_path):
    context = context_in(tmp_path)
    persistor = PTFileModelPersistor(model=LINEAR)
    model = persistor.load_model(context)
    module = persistor.module(context)
    assert sorted(model) == ["bias", "weight"]
    np.testing.assert_array_equal(model["weight"], module.weight.detach().numpy())
    assert not persistor.global_model_path(context).exists()


def test_save_writes_flares_file_name_and_layout_and_a_new_persistor_resumes_from_it(tmp_path):
    context = context_in(tmp_path)
    persistor = PTFileModelPersistor(model=LINEAR)
    model = {name: array + 1 for name, array in persistor.load_model(context).items()}
    persistor.save_model(model, context)
    path = context.app_dir / "FL_global_model.pt"
    saved = torch.load(path, weights_only=True)
    assert sorted(saved) == ["model"] and sorted(saved["model"]) == ["bias", "weight"]
    np.testing.assert_array_equal(saved["model"]["weight"].numpy(), model["weight"])
    resumed = PTFileModelPersistor(model=LINEAR).load_model(context)  # e.g. after a server restart
    np.testing.assert_array_equal(resumed["weight"], model["weight"])
    assert not list(context.app_dir.glob("*.tmp"))


def test_the_best_model_goes_to_its_own_file(tmp_path):
    context = context_in(tmp_path)
    persistor = PTFileModelPersistor(model=LINEAR, best_global_model_file_name="best.pt")
    model = persistor.load_model(context)
    persistor.save_best_model({"weight": model["weight"] * 0}, context)
    best = read_model_file(context.app_dir / "best.pt")
    np.testing.assert_array_equal(best["weight"], np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(best["bias"], model["bias"])  # what the model did not name is kept


def test_a_source_checkpoint_gives_the_initial_weights(tmp_path):
    context = context_in(tmp_path)
    source = torch.nn.Linear(3, 2)
    torch.save(source.state_dict(), tmp_path / "start.pt")  # a bare state dict, as torch users save them
    model = PTFileModelPersistor(model=LINEAR, source_ckpt_file_full_name=str(tmp_path / "start.pt")).load_model(
        context
    )
    np.testing.assert_array_equal(model["weight"], source.weight.detach().numpy())


def test_excluded_variables_stay_on_the_server_and_in_the_file(tmp_path):
    context = context_in(tmp_path)
    persistor = PTFileModelPersistor(model=LINEAR, exclude_vars="^bias$")
    model = persistor.load_model(context)
    assert sorted(model) == ["weight"]
    bias = persistor.module(context).bias.detach().numpy().copy()
    persistor.save_model({"weight": model["weight"] + 1}, context)
    saved = read_model_file(persistor.global_model_path(context))
    np.testing.assert_array_equal(saved["bias"], bias)
    np.testing.assert_array_equal(saved["weight"], model["weight"] + 1)


def test_to_module_gives_a_copy_holding_the_model(tmp_path):
    context = context_in(tmp_path)
    persistor = PTFileModelPersistor(model=LINEAR)
    model = {name: np.ones_like(array) for name, array in persistor.load_model(context).items()}
    module = persistor.to_module(model, context)
    assert module is not persistor.module(context)
    torch.testing.assert_close(module(torch.ones(1, 3)), torch.full((1, 2), 4.0))


def test_the_model_class_resolves_in_the_apps_custom_folder_first(tmp_path):
    context = context_in(tmp_path)
    (context.app_dir / "custom").mkdir()
    (context.app_dir / "custom" / "tiny.py").write_text(
        "import torch\n"
        "class Tiny(torch.nn.Module):\n"
        "    def __init__(self, width=2):\n"
        "        super().__init__()\n"
        "        self.w = torch.nn.Parameter(torch.zeros(width))\n"
    )
    model = PTFileModelPersistor(model={"path": "tiny.Tiny", "args": {"width": 5}}).load_model(context)
    assert model["w"].shape == (5,)


def test_a_module_object_is_taken_as_is(tmp_path):
    module = torch.nn.Linear(2, 1)
    persistor = PTFileModelPersistor(model=module)
    persistor.load_model(context_in(tmp_path))
    assert persistor.module(context_in(tmp_path / "other")) is module


def test_a_file_holding_other_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"weight": torch.zeros(2)}, "extra": Path("/etc")}, path)  # not a plain container
    with pytest.raises(ValueError, match="evil.pt: not a PyTorch weights file"):
        read_model_file(path)
    torch.save({"model": {"weight": [1, 2]}}, path)
    with pytest.raises(ValueError, match="expected a state dict of tensors"):
        read_model_file(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "PTFileModelPersistor.args.model: missing"),
        ({"model": LINEAR, "global_model_file_name": "../x.pt"}, "'../x.pt' must be a plain file name"),
    ],
)
def test_bad_arguments_are_config_errors_that_name_them(args, message):
    with pytest.raises(ConfigError) as raised:
        PTFileModelPersistor(**args)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"path": "nowhere.Net"}, "PTFileModelPersistor.args.model.path: cannot find 'nowhere.Net'"),
        ({"path": "torch.nn.Linear", "args": {"width": 3}}, "PTFileModelPersistor.args.model.args:"),
        ({"path": "collections.OrderedDict"}, "OrderedDict is not a Module"),
        (3, "expected {'path': 'module.Class'"),
    ],
)
def test_a_model_that_cannot_be_built_is_a_config_error_naming_it(tmp_path, model, message):
    with pytest.raises(ConfigError) as raised:
        PTFileModelPersistor(model=model).load_model(context_in(tmp_path))
    assert message in str(raised.value)


def test_hello_pt_config_builds_the_persistor_with_flares_file_names():
    app = load_server_app(APP)
    persistor = app.components["persistor"]
    assert isinstance(persistor, PTFileModelPersistor)
    assert persistor.global_model_file_name == "FL_global_model.pt"
    assert persistor.best_global_model_file_name == "best_FL_global_model.pt"
    assert [entry.id for entry in app.workflows] == ["scatter_and_gather", "cross_site_validate", "global_test"]
