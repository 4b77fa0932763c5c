"""Loading FLARE 2.0 app folders: custom/ as FLARE imports it (isolated per app and per load), `nvflare` as
fl-broker's layer or the installed one, `name` lookups, nested components, FLARE's defaults and the errors for
FLARE names fl-broker does not run."""

from __future__ import annotations

import gc
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from fl_broker.apps import app_imports
from fl_broker.apps.loader import load_client_app, load_server_app
from fl_broker.errors import ConfigError, WorkflowFailed
from fl_broker.fl import aggregation
from fl_broker.fl.context import RunContext
from fl_broker.flare.app_common.workflows.cross_site_model_eval import CrossSiteModelEval
from fl_broker.flare.app_common.workflows.scatter_and_gather import ScatterAndGather
from fl_broker.wire.messages import DXO, DataKind

ROOT = Path(__file__).resolve().parents[2]
FLARE_APP = ROOT / "tests" / "flare_apps" / "hello-flare"
AGGREGATOR = "nvflare.app_common.aggregators.intime_accumulate_model_aggregator.InTimeAccumulateWeightedAggregator"


def write_app(folder: Path, server: dict | None = None, client: dict | None = None, custom: dict | None = None) -> Path:
    """An app folder with these configs and custom files."""
    (folder / "config").mkdir(parents=True)
    (folder / "custom").mkdir()
    for name, config in (("config_fed_server.json", server), ("config_fed_client.json", client)):
        if config is not None:
            (folder / "config" / name).write_text(json.dumps({"format_version": 2, **config}))
    for name, text in (custom or {}).items():
        (folder / "custom" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "custom" / name).write_text(text)
    return folder


def executor_app(folder: Path, executor: dict, custom: dict | None = None) -> Path:
    return write_app(folder, client={"executors": [{"tasks": ["train"], "executor": executor}]}, custom=custom)


TRAINER = """
from constants import VALUE
from helpers.scale import twice
from nvflare.apis.executor import Executor
from nvflare.apis.shareable import make_reply


class Trainer(Executor):
    value = twice(VALUE)

    def execute(self, task_name, shareable, fl_ctx, abort_signal):
        return make_reply("OK")
"""


def test_custom_files_import_each_other_and_two_apps_stay_apart(tmp_path):
    apps = []
    for number in (1, 2):
        custom = {"constants.py": f"VALUE = {number}\n", "helpers/__init__.py": "", "trainer.py": TRAINER,
                  "helpers/scale.py": "def twice(x):\n    return 2 * x\n"}  # fmt: skip
        apps.append(executor_app(tmp_path / f"app{number}", {"path": "trainer.Trainer"}, custom))
    first, second = load_client_app(apps[0]), load_client_app(apps[1])
    again = load_client_app(apps[0])  # another run of the first app: modules of its own
    try:
        values = [type(app.engine.listeners[0]).value for app in (first, second, again)]
        assert values == [2, 4, 2]
        assert type(first.engine.listeners[0]) is not type(again.engine.listeners[0])
        assert "constants" not in sys.modules and "helpers" not in sys.modules
    finally:
        for app in (first, second, again):
            app.end_run()
    assert not any(name.startswith(first.resolver.package.name) for name in sys.modules)


def test_nvflare_is_fl_brokers_layer_while_an_app_is_loaded(tmp_path):
    if app_imports.installed_nvflare() is not None:
        pytest.skip("a real nvflare is installed here")
    gc.collect()  # apps other tests loaded and dropped let their imports go
    assert app_imports._users == 0 and not app_imports.nvflare_is_layer()
    app = load_client_app(executor_app(tmp_path / "app", {"path": "trainer.Trainer"},
                                       {"constants.py": "VALUE = 1\n", "trainer.py": TRAINER, "helpers/__init__.py": "",
                                        "helpers/scale.py": "def twice(x):\n    return x\n"}))  # fmt: skip
    import nvflare.apis.dxo as theirs  # type: ignore[import-not-found]

    import fl_broker.flare.apis.dxo as ours

    assert (
        app_imports.nvflare_is_layer()
        and theirs is ours
        and sys.modules["nvflare.apis.executor"].__name__ == ("fl_broker.flare.apis.executor")
    )
    app.end_run()
    assert not app_imports.nvflare_is_layer() and "nvflare.apis.dxo" not in sys.modules
    with pytest.raises(ImportError):
        __import__("nvflare")


def test_an_installed_nvflare_is_used_and_said_so(tmp_path, monkeypatch, caplog):
    site = tmp_path / "site-packages"
    (site / "nvflare").mkdir(parents=True)
    (site / "nvflare" / "__init__.py").write_text("REAL = True\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(app_imports, "_announced", set())
    gc.collect()
    assert app_imports._users == 0
    probe = "import nvflare\n\nclass Probe:\n    real = getattr(nvflare, 'REAL', False)\n"
    client = {"executors": [{"tasks": ["t"], "executor": {"path": "fl_broker.fl.numpy_components.NPTrainer"}}],
              "components": [{"id": "probe", "path": "probe.Probe"}]}  # fmt: skip
    with caplog.at_level(logging.INFO, logger="fl_broker.apps.app_imports"):
        app = load_client_app(write_app(tmp_path / "a", client=client, custom={"probe.py": probe}))
        assert type(app.components["probe"]).real is True and not app_imports.nvflare_is_layer()
        app.end_run()
        sys.modules.pop("nvflare", None)
        monkeypatch.setenv(app_imports.CHOICE_VARIABLE, "fl_broker")
        app = load_client_app(write_app(tmp_path / "b", client=client, custom={"probe.py": probe}))
        assert type(app.components["probe"]).real is False and app_imports.nvflare_is_layer()
        app.end_run()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"apps import the installed nvflare ({site / 'nvflare'}") for m in messages)
    assert any("not the one installed at" in m for m in messages)


def test_the_flare_app_loads_with_names_nested_components_and_flare_defaults(tmp_path):
    app = load_server_app(FLARE_APP)
    try:
        sag, cse = (entry.workflow for entry in app.workflows)
        assert isinstance(sag, ScatterAndGather) and isinstance(cse, CrossSiteModelEval)
        persistor = app.components["persistor"]
        assert type(persistor.initial).__name__ == "InitialWeights"  # the nested component, built first
        aggregator = app.components["aggregator"]
        assert aggregator.expected_data_kind == DataKind.WEIGHT_DIFF  # FLARE's default
        assert aggregator.excluded("frozen_key") and not aggregator.excluded("numpy_key")
        assert cse.model_locator is app.components["model_locator"] and cse.formatter is app.components["formatter"]
        assert type(sag.persistor).__name__ == "FlarePersistor" and sag.persistor.persistor is persistor
        assert app.engine.get_component("persistor") is persistor
    finally:
        app.end_run()


def test_a_flare_persistor_gets_the_start_round_and_gives_a_model_learnable(tmp_path):
    app = load_server_app(FLARE_APP)
    sag = app.workflows[0].workflow
    run_dir = tmp_path / "server" / "run_1"
    run_dir.mkdir(parents=True)
    context = RunContext("server", 1, run_dir, run_dir / "app_server")
    try:
        app.start_run(context)
        weights = sag.persistor.load_model(context)
        assert sorted(weights) == ["frozen_key", "numpy_key"] and weights["frozen_key"].tolist() == [100.0]
        weights["numpy_key"] += 5
        sag.persistor.save_model(weights, context)
        resumed = sag.persistor.load_model(RunContext("server", 1, run_dir, run_dir / "app_server", start_round=2))
        np.testing.assert_array_equal(resumed["numpy_key"], weights["numpy_key"])
    finally:
        app.end_run()
    assert (run_dir / "flare_events.txt").read_text().splitlines() == [
        "_start_run round=None",
        "load start_round=0 initial",
        "save meta={'source': 'initial'}",
        "load start_round=2 saved",
        "_end_run round=None",
    ]


def test_a_persistor_that_returns_plain_weights_is_named(tmp_path):
    persistor = """
from nvflare.app_common.abstract.model_persistor import ModelPersistor


class Plain(ModelPersistor):
    def load_model(self, fl_ctx):
        return {"w": 1}

    def save_model(self, model, fl_ctx):
        pass
"""
    server = json.loads((FLARE_APP / "config" / "config_fed_server.json").read_text())
    server["components"][0] = {"id": "persistor", "path": "plain.Plain"}
    folder = tmp_path / "app"
    shutil.copytree(FLARE_APP, folder)
    (folder / "custom" / "plain.py").write_text(persistor)
    (folder / "config" / "config_fed_server.json").write_text(json.dumps(server))
    app = load_server_app(folder)
    run_dir = tmp_path / "run_1"
    try:
        with pytest.raises(
            WorkflowFailed, match=r"Plain.load_model returned a dict with keys \['w'\], expected a Model"
        ):
            app.workflows[0].workflow.persistor.load_model(RunContext("server", 1, run_dir, run_dir / "app"))
    finally:
        app.end_run()


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            {"name": "ScatterAndGathr"},
            r"components\[0\]\.name: 'ScatterAndGathr' is a built-in name fl-broker "
            r"does not support; the closest supported one is 'ScatterAndGather'",
        ),
        (
            {"path": "nvflare.app_common.workflows.scatter_and_gather_scaffold.ScatterAndGatherScaffold"},
            r"components\[0\]\.path: 'nvflare.app_common.workflows.scatter_and_gather_scaffold."
            r"ScatterAndGatherScaffold' is a FLARE 2.0 name fl-broker does not support; the closest supported one "
            r"is 'nvflare.app_common.workflows.scatter_and_gather.ScatterAndGather'",
        ),
        (
            {"path": "nvflare.app_common.aggregators.intime_accumulate_model_aggregator.InTimeAggregator"},
            r"the closest supported one is '" + AGGREGATOR.replace(".", r"\.") + "'",
        ),
        (
            {"path": "widget.Widget"},
            r"components\[0\]\.path: importing .*widget\.py failed: ModuleNotFoundError.*"
            r"fl-broker's FLARE 2.0 layer has no module 'nvflare.app_common.widgets'",
        ),
        (
            {"path": "np_initial.InitialWeights", "args": {"values": {"name": "Nope"}}},
            r"components\[0\]\.args\.values\.name: 'Nope' is a built-in name fl-broker does not support",
        ),
    ],
)
def test_unsupported_flare_names_say_what_is_closest(tmp_path, entry, message):
    widget = "from nvflare.app_common.widgets.validation_json_generator import ValidationJsonGenerator\n"
    custom = {"widget.py": widget, "np_initial.py": (FLARE_APP / "custom" / "np_initial.py").read_text(),
              "constants.py": (FLARE_APP / "custom" / "constants.py").read_text()}  # fmt: skip
    folder = write_app(tmp_path / "app", server={"components": [{"id": "c", **entry}], "workflows": []}, custom=custom)
    users = app_imports._users
    with pytest.raises(ConfigError, match=message):
        load_server_app(folder)
    assert app_imports._users == users  # a failed load lets its imports go


def test_flare_scatter_and_gather_counts_num_rounds_from_start_round():
    persistor, generator = object(), object()
    sag = ScatterAndGather(aggregator=aggregation.InTimeAccumulateWeightedAggregator(), persistor=persistor,
                           shareable_generator=generator, start_round=2, num_rounds=3)  # type: ignore[arg-type]  # fmt: skip
    assert (sag.start_round, sag.num_rounds) == (2, 5)  # rounds 2, 3 and 4, as FLARE 2.0 runs them


def test_exclude_vars_takes_a_regex_string_or_a_list():
    def accepted(exclude_vars):
        agg = aggregation.InTimeAccumulateWeightedAggregator(exclude_vars=exclude_vars)
        agg.accept("s", DXO(DataKind.WEIGHTS, {"conv.w": np.ones(1), "bn.mean": np.ones(1), "bn.var": np.ones(1)}))
        return sorted(agg.aggregate().data)

    assert accepted(r"^bn\.") == ["conv.w"]
    assert accepted(["bn.mean"]) == ["bn.var", "conv.w"]
    with pytest.raises(ValueError, match="not a valid regular expression"):
        aggregation.InTimeAccumulateWeightedAggregator(exclude_vars="(")


def test_the_hello_numpy_apps_name_the_numpy_built_ins():
    for app in ("hello-numpy-sag", "hello-numpy-cross-val"):
        assert not (ROOT / "apps" / app / "custom").exists()
        server = load_server_app(ROOT / "apps" / app)
        client = load_client_app(ROOT / "apps" / app)
        try:
            assert type(server.components["persistor"]).__module__ == "fl_broker.fl.numpy_components"
            assert type(client.executors["train"]).__module__ == "fl_broker.fl.numpy_components"
        finally:
            server.end_run()
            client.end_run()
