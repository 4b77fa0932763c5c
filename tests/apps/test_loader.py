"""App loading: the hello-numpy-sag configs, and errors that name the file, the key and what was expected."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fl_broker.apps.loader import load_client_app, load_server_app
from fl_broker.errors import ConfigError
from fl_broker.fl.scatter_gather import ScatterAndGather

APP = Path(__file__).resolve().parents[2] / "apps" / "hello-numpy-sag"


def test_hello_numpy_sag_loads():
    server = load_server_app(APP)
    assert isinstance(server.workflow, ScatterAndGather)
    assert (server.workflow.min_clients, server.workflow.num_rounds) == (2, 10)
    client = load_client_app(APP)
    assert set(client.executors) == {"train"}
    assert type(client.executors["train"]).__name__ == "NPTrainer"


@pytest.fixture
def app(tmp_path) -> Path:
    target = tmp_path / "app"
    shutil.copytree(APP, target)
    return target


def edit(app: Path, name: str, change) -> None:
    path = app / "config" / name
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def set_workflow_arg(key, value):
    def change(config):
        config["workflows"][0]["args"][key] = value

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["components"][0].update(path="no_such_module.Thing"), r"components\[0\]\.path: cannot find"),
        (lambda c: c["components"][0].update(path="fl_broker.fl.numpy_components.Nope"), "has no class 'Nope'"),
        (lambda c: c["components"][2]["args"].update(bogus=1), r"components\[2\]\.args: .*bogus"),
        (set_workflow_arg("num_rounds", "ten"), r"workflows\[0\]\.args\.num_rounds: expected int, got str"),
        (set_workflow_arg("aggregator_id", "missing"), r"aggregator_id: no component with id 'missing'"),
        (set_workflow_arg("min_clients", 0), r"workflows\[0\]\.args: ScatterAndGather refused them: min_clients"),
        (lambda c: c.update(format_version=9), "format_version"),
        (lambda c: c["components"][0].pop("path"), r"components\[0\]: missing key 'path'"),
    ],
)
def test_server_config_errors_name_file_and_key(app, change, message):
    edit(app, "config_fed_server.json", change)
    with pytest.raises(ConfigError, match=message) as info:
        load_server_app(app)
    assert "config_fed_server.json" in str(info.value)


def test_client_config_errors_name_file_and_key(app):
    edit(app, "config_fed_client.json", lambda c: c["executors"][0]["executor"].update(args={"delta": "one"}))
    with pytest.raises(ConfigError, match=r"config_fed_client.json: executors\[0\]\.executor\.args\.delta"):
        load_client_app(app)


def test_invalid_json_names_the_file(app):
    (app / "config" / "config_fed_server.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config_fed_server.json: not valid JSON"):
        load_server_app(app)


def test_flare_paths_resolve_to_builtins(app):
    def flare_paths(config):
        config["workflows"][0]["path"] = "nvflare.app_common.workflows.scatter_and_gather.ScatterAndGather"

    edit(app, "config_fed_server.json", flare_paths)
    assert isinstance(load_server_app(app).workflow, ScatterAndGather)


def test_the_workflow_gets_its_components_through_its_constructor(app):
    server = load_server_app(app)
    assert server.workflow.aggregator is server.components["aggregator"]
    assert server.workflow.persistor is server.components["persistor"]
    assert server.workflow.generator is server.components["shareable_generator"]


def test_component_ids_default_to_flares(app):
    def drop_ids(config):
        for key in ("aggregator_id", "persistor_id", "shareable_generator_id"):
            del config["workflows"][0]["args"][key]

    edit(app, "config_fed_server.json", drop_ids)
    server = load_server_app(app)
    assert server.workflow.persistor is server.components["persistor"]


@pytest.mark.parametrize(
    "change, message",
    [
        (
            set_workflow_arg("aggregator_id", "persistor"),
            r"workflows\[0\]\.args\.aggregator_id: component 'persistor' is a NPModelPersistor, "
            r"expected a Aggregator",
        ),
        (set_workflow_arg("persistor_id", 3), r"workflows\[0\]\.args\.persistor_id: expected a component id \(str\)"),
        (set_workflow_arg("aggregator", "aggregator"), r"args\.aggregator: give the component's id as 'aggregator_id'"),
        (
            lambda c: c["workflows"][0].update(path="fl_broker.fl.numpy_components.NPModelPersistor"),
            r"workflows\[0\]\.path: 'fl_broker.fl.numpy_components.NPModelPersistor' is not a workflow",
        ),
    ],
)
def test_component_arguments_are_checked(app, change, message):
    edit(app, "config_fed_server.json", change)
    with pytest.raises(ConfigError, match=message):
        load_server_app(app)


def second_workflow(workflow_id, **args):
    def change(config):
        entry = json.loads(json.dumps(config["workflows"][0]))
        entry["id"] = workflow_id
        entry["args"].update(args)
        config["workflows"].append(entry)

    return change


def test_several_workflows_load_in_order_with_their_own_args_and_shared_components(app):
    edit(app, "config_fed_server.json", second_workflow("fine_tune", num_rounds=3, min_clients=1))
    server = load_server_app(app)
    assert [entry.id for entry in server.workflows] == ["scatter_and_gather", "fine_tune"]
    first, second = (entry.workflow for entry in server.workflows)
    assert isinstance(second, ScatterAndGather)
    assert (first.num_rounds, second.num_rounds, first.min_clients, second.min_clients) == (10, 3, 2, 1)
    assert first.persistor is second.persistor is server.components["persistor"]


@pytest.mark.parametrize(
    "change, message",
    [
        (second_workflow("scatter_and_gather"), r"workflows\[0\]\.id: 'scatter_and_gather' is used more than once"),
        (
            lambda c: c["workflows"].append({"id": "eval", "path": "no_such_module.CrossSiteEval"}),
            r"workflows\[1\]\.path: cannot find 'no_such_module.CrossSiteEval'",
        ),
    ],
)
def test_workflow_list_errors_name_the_file_and_key(app, change, message):
    edit(app, "config_fed_server.json", change)
    with pytest.raises(ConfigError, match=message) as info:
        load_server_app(app)
    assert str(info.value).startswith("config_fed_server.json: workflows[")
