"""The task_data_filters / task_result_filters lists of both configs: FLARE's shape, `path` or `name`,
FLARE's paths as aliases, and errors that name the file and the key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fl_broker.apps.loader import load_client_app, load_server_app
from fl_broker.errors import ConfigError
from fl_broker.fl.filters import Direction
from fl_broker.privacy.exclude_vars import ExcludeVars
from fl_broker.privacy.gaussian import GaussianPrivacy
from fl_broker.privacy.percentile import PercentilePrivacy
from fl_broker.privacy.svt import SVTPrivacy

APP = Path(__file__).resolve().parents[2] / "apps" / "hello-numpy-sag"


@pytest.fixture
def app(tmp_path) -> Path:
    target = tmp_path / "app"
    shutil.copytree(APP, target)
    return target


def set_filters(app: Path, name: str, section: str, entries: list) -> None:
    path = app / "config" / name
    config = json.loads(path.read_text())
    config[section] = entries
    path.write_text(json.dumps(config))


def test_hello_numpy_sag_has_no_filters():
    assert load_client_app(APP).filters.chain(Direction.TASK_RESULT, "train") == ()
    assert load_server_app(APP).filters.chain(Direction.TASK_DATA, "train") == ()


def test_client_filters_by_path_by_name_and_by_flare_path_in_the_config_order(app):
    entries = [
        {
            "tasks": ["train", "validate"],
            "filters": [
                {"path": "nvflare.app_common.filters.exclude_vars.ExcludeVars", "args": {"exclude_vars": "bn"}},
                {"name": "PercentilePrivacy", "args": {"percentile": 20, "gamma": 0.5}},
                {"path": "fl_broker.privacy.gaussian.GaussianPrivacy", "args": {"clip_norm": 1, "noise_multiplier": 1}},
            ],
        },
        {"tasks": ["submit_model"], "filters": [{"path": "nvflare.app_common.filters.svt_privacy.SVTPrivacy"}]},
    ]
    set_filters(app, "config_fed_client.json", "task_result_filters", entries)
    filters = load_client_app(app).filters
    train = filters.chain(Direction.TASK_RESULT, "train")
    assert [type(f) for f in train] == [ExcludeVars, PercentilePrivacy, GaussianPrivacy]
    assert train[0].pattern.pattern == "bn" and train[1].percentile == 20
    assert filters.chain(Direction.TASK_RESULT, "validate") == train
    assert [type(f) for f in filters.chain(Direction.TASK_RESULT, "submit_model")] == [SVTPrivacy]
    assert filters.chain(Direction.TASK_DATA, "train") == () and filters.side == "client"
    assert filters.needs_task_data("train") and not filters.needs_task_data("submit_model")


def test_server_filters_come_from_config_fed_server(app):
    entry = {"tasks": ["train"], "filters": [{"name": "ExcludeVars", "args": {"exclude_vars": ["x"]}}]}
    set_filters(app, "config_fed_server.json", "task_data_filters", [entry])
    filters = load_server_app(app).filters
    (only,) = filters.chain(Direction.TASK_DATA, "train")
    assert isinstance(only, ExcludeVars) and only.names == {"x"} and filters.side == "server"


FILTER = {"name": "ExcludeVars"}


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"tasks": ["train"]}, r"task_result_filters: expected list, got dict"),
        (["train"], r"task_result_filters\[0\]: expected an object with tasks and filters"),
        ([{"filters": [FILTER]}], r"task_result_filters\[0\]: missing key 'tasks'"),
        ([{"tasks": [], "filters": [FILTER]}], r"task_result_filters\[0\]\.tasks: expected a non-empty list"),
        ([{"tasks": ["train"], "filters": []}], r"task_result_filters\[0\]\.filters: expected at least one filter"),
        ([{"tasks": ["train"], "filters": [{"args": {}}]}], r"filters\[0\]: expected a path \(module\.Class\) or a"),
        (
            [{"tasks": ["train"], "filters": [{"name": "Nope"}]}],
            r"filters\[0\]\.name: no filter is named 'Nope' \(known: Excl",
        ),
        (
            [{"tasks": ["train"], "filters": [{"path": "fl_broker.fl.executor.Executor"}]}],
            r"filters\[0\]\.args: Executor ref",
        ),
        (
            [{"tasks": ["train"], "filters": [{"path": "collections.OrderedDict"}]}],
            r"filters\[0\]\.path: OrderedDict is not a filter",
        ),
        (
            [{"tasks": ["train"], "filters": [{"name": "PercentilePrivacy", "args": {"gamma": -1}}]}],
            r"filters\[0\]\.args: PercentilePrivacy refused them: gamma must be > 0",
        ),
        (
            [
                {
                    "tasks": ["train"],
                    "filters": [{"name": "GaussianPrivacy", "args": {"clip_norm": "1", "noise_multiplier": 1}}],
                }
            ],
            r"filters\[0\]\.args\.clip_norm: expected float, got str",
        ),
        (
            [{"tasks": ["train"], "filters": [FILTER]}, {"tasks": ["validate", "train"], "filters": [FILTER]}],
            r"task_result_filters\[1\]\.tasks: task 'train' already has task_result_filters",
        ),
    ],
)
def test_a_bad_filter_list_names_the_file_and_the_key(app, entries, message):
    set_filters(app, "config_fed_client.json", "task_result_filters", entries)
    with pytest.raises(ConfigError, match=message) as raised:
        load_client_app(app)
    assert str(raised.value).startswith(("config_fed_client.json: task_result_filters", "config_fed_client.json.task_"))
