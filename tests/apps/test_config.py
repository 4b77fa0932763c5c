"""Reading FLARE-shaped configs and building components: every error names the file, the key and what was
expected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fl_broker.apps.config import (
    SERVER_CONFIG,
    ClassResolver,
    build,
    build_components,
    component_specs,
    field_of,
    read_config,
)
from fl_broker.errors import ConfigError
from fl_broker.fl.aggregation import InTimeAccumulateWeightedAggregator


def write(app: Path, text: str) -> None:
    path = app / SERVER_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    "text, message",
    [
        (None, r"config_fed_server.json: file not found \(an app needs config/config_fed_server.json\)"),
        ("{nope", "config_fed_server.json: not valid JSON"),
        ("[1]", "config_fed_server.json: expected a JSON object at the top level"),
        ('{"format_version": 3}', "config_fed_server.json: format_version: expected 1 or 2, got 3"),
    ],
)
def test_read_config_errors_name_the_file(tmp_path, text, message):
    if text is not None:
        write(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        read_config(tmp_path, SERVER_CONFIG)


def test_read_config_takes_both_format_versions(tmp_path):
    write(tmp_path, json.dumps({"format_version": 1, "components": []}))
    assert read_config(tmp_path, SERVER_CONFIG)["components"] == []
    write(tmp_path, "{}")
    assert read_config(tmp_path, SERVER_CONFIG) == {}


def test_field_of_names_the_key_and_the_expected_type():
    entry = {"tasks": "train", "count": True, "rounds": 3}
    with pytest.raises(ConfigError, match=r"^f.json: executors\[0\]: missing key 'executor'$"):
        field_of(entry, "executor", dict, "f.json: executors[0]")
    with pytest.raises(ConfigError, match=r"executors\[0\]\.tasks: expected list, got str 'train'"):
        field_of(entry, "tasks", list, "f.json: executors[0]")
    with pytest.raises(ConfigError, match=r"\.count: expected int, got bool True"):  # a bool is not a number here
        field_of(entry, "count", int, "w")
    with pytest.raises(ConfigError, match="expected str or list"):
        field_of(entry, "rounds", (str, list), "w")
    assert field_of(entry, "rounds", int, "w") == 3
    assert field_of(entry, "absent", dict, "w", default={}) == {}


def test_component_specs_give_ids_and_places():
    config = {"components": [{"id": "a", "path": "m.A"}, {"path": "m.B", "args": {"x": 1}}]}
    first, second = component_specs(config, "components", "f.json")
    assert (first.id, first.path, first.args, first.where) == ("a", "m.A", {}, "f.json: components[0]")
    assert (second.id, second.args, second.where) == ("components_1", {"x": 1}, "f.json: components[1]")
    assert component_specs({}, "workflows", "f.json") == []


@pytest.mark.parametrize(
    "entries, message",
    [
        (["m.A"], r"f.json: components\[0\]: expected an object with id, path \(or name\) and args"),
        ([{"id": "a", "path": "m.A"}, {"id": "a", "path": "m.B"}], r"components\[0\]\.id: 'a' is used more than once"),
        ([{"id": "a"}], r"components\[0\]: missing key 'path'"),
        ([{"path": "m.A", "args": []}], r"components\[0\]\.args: expected dict"),
    ],
)
def test_component_spec_errors(entries, message):
    with pytest.raises(ConfigError, match=message):
        component_specs({"components": entries}, "components", "f.json")


@pytest.fixture
def custom(tmp_path) -> Path:
    folder = tmp_path / "custom"
    (folder / "pkg").mkdir(parents=True)
    (folder / "things.py").write_text(
        "class Thing:\n    def __init__(self, size: int = 1):\n        self.size = size * 3\n"
    )
    (folder / "pkg" / "inner.py").write_text("class Inner:\n    pass\n")
    (folder / "broken.py").write_text("raise RuntimeError('bad module')\n")
    (folder / "values.py").write_text("NOT_A_CLASS = 1\n")
    return folder


def test_custom_classes_are_found_in_files_and_packages(custom):
    resolver = ClassResolver(custom)
    cls = resolver.resolve("things.Thing", "f.json: components[0]")
    assert build(cls, {"size": 2}, "w").size == 6
    assert resolver.resolve("things.Thing", "w") is cls  # loaded once
    assert resolver.resolve("pkg.inner.Inner", "w").__name__ == "Inner"


def test_two_apps_keep_their_custom_modules_apart(custom, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "pkg").mkdir()
    (other / "pkg" / "inner.py").write_text("class Inner:\n    OTHER = True\n")
    mine = ClassResolver(custom).resolve("pkg.inner.Inner", "w")
    theirs = ClassResolver(other).resolve("pkg.inner.Inner", "w")
    assert mine is not theirs and getattr(theirs, "OTHER", False) and not hasattr(mine, "OTHER")


@pytest.mark.parametrize(
    "path, message",
    [
        ("Thing", r"w\.path: 'Thing' is not of the form module.Class"),
        ("broken.Broken", r"w\.path: importing .*broken.py failed: RuntimeError\('bad module'\)"),
        ("values.NOT_A_CLASS", r"w\.path: module 'values' has no class 'NOT_A_CLASS'"),
        ("nowhere.Thing", r"w\.path: cannot find 'nowhere.Thing' \(not in the app's custom/ folder"),
    ],
)
def test_resolver_errors_name_the_place(custom, path, message):
    with pytest.raises(ConfigError, match=message):
        ClassResolver(custom).resolve(path, "w")


def test_flare_and_old_paths_resolve_to_builtins():
    resolver = ClassResolver(None)
    for path in (
        "fl_broker.aggregation.InTimeAccumulateWeightedAggregator",
        "fl_broker.fl.aggregation.InTimeAccumulateWeightedAggregator",
    ):
        assert resolver.resolve(path, "w") is InTimeAccumulateWeightedAggregator
    # FLARE's name is fl-broker's aggregator with FLARE's defaults
    flare = resolver.resolve(
        "nvflare.app_common.aggregators.intime_accumulate_model_aggregator.InTimeAccumulateWeightedAggregator", "w"
    )
    assert issubclass(flare, InTimeAccumulateWeightedAggregator) and flare is not InTimeAccumulateWeightedAggregator


class Typed:
    def __init__(self, rounds: int, rate: float = 0.1, name: str | None = None, *, flag: bool = False) -> None:
        if rounds < 0:
            raise ValueError("rounds must be >= 0")
        self.rounds, self.rate, self.name, self.flag = rounds, rate, name, flag


@pytest.mark.parametrize(
    "args, message",
    [
        ({"rounds": "ten"}, r"^w\.args\.rounds: expected int, got str 'ten'$"),
        ({"rounds": True}, r"w\.args\.rounds: expected int, got bool"),
        ({"rounds": 1, "rate": "fast"}, r"w\.args\.rate: expected float"),
        ({"rounds": 1, "name": 5}, r"w\.args\.name: expected"),
        ({"rounds": 1, "bogus": 1}, r"w\.args: .*bogus.* \(accepted: rounds, rate, name, flag\)"),
        ({}, r"w\.args: .*rounds"),
        ({"rounds": -1}, r"w\.args: Typed refused them: rounds must be >= 0"),
    ],
)
def test_build_checks_arguments_by_name_and_type(args, message):
    with pytest.raises(ConfigError, match=message):
        build(Typed, args, "w")


def test_build_accepts_ints_for_floats_and_none_for_optionals():
    built = build(Typed, {"rounds": 2, "rate": 1, "name": None, "flag": True}, "w")
    assert (built.rounds, built.rate, built.name, built.flag) == (2, 1, None, True)


def test_build_components_keys_them_by_id(custom):
    config = {"components": [{"id": "t", "path": "things.Thing", "args": {"size": 1}}]}
    built = build_components(component_specs(config, "components", "f.json"), ClassResolver(custom))
    assert list(built) == ["t"] and built["t"].size == 3
