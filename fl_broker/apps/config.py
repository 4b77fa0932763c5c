"""Load an app's FLARE-shaped JSON configs and build its components.

`path` values resolve against the app's `custom/` folder first, then importable modules (built-ins).
Every error is a ConfigError naming the file, the key and what was expected.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import sys
import types
import typing
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fl_broker.errors import ConfigError

SERVER_CONFIG = "config/config_fed_server.json"
CLIENT_CONFIG = "config/config_fed_client.json"

# FLARE 2.0 built-in paths that have an fl-broker equivalent, so FLARE configs load unchanged.
FLARE_ALIASES = {
    "nvflare.app_common.workflows.scatter_and_gather.ScatterAndGather": "fl_broker.fl.scatter_gather.ScatterAndGather",
    "nvflare.app_common.workflows.cyclic_ctl.CyclicController": "fl_broker.fl.cyclic.CyclicController",
    "nvflare.app_common.aggregators.intime_accumulate_model_aggregator.InTimeAccumulateWeightedAggregator": (
        "fl_broker.fl.aggregation.InTimeAccumulateWeightedAggregator"
    ),
    "nvflare.app_common.shareablegenerators.full_model_shareable_generator.FullModelShareableGenerator": (
        "fl_broker.fl.model.FullModelShareableGenerator"
    ),
    "nvflare.app_common.filters.exclude_vars.ExcludeVars": "fl_broker.privacy.exclude_vars.ExcludeVars",
    "nvflare.app_common.filters.percentile_privacy.PercentilePrivacy": "fl_broker.privacy.percentile.PercentilePrivacy",
    "nvflare.app_common.filters.svt_privacy.SVTPrivacy": "fl_broker.privacy.svt.SVTPrivacy",
    # fl-broker 0.1's flat module paths, so configs written for it keep loading.
    "fl_broker.scatter_gather.ScatterAndGather": "fl_broker.fl.scatter_gather.ScatterAndGather",
    "fl_broker.aggregation.InTimeAccumulateWeightedAggregator": (
        "fl_broker.fl.aggregation.InTimeAccumulateWeightedAggregator"
    ),
    "fl_broker.model.FullModelShareableGenerator": "fl_broker.fl.model.FullModelShareableGenerator",
}


@dataclass(frozen=True)
class ComponentSpec:
    """One `{id, path, args}` entry, with where it was found for error messages."""

    id: str
    path: str
    args: dict[str, Any]
    where: str  # e.g. "config_fed_server.json: components[1]"


def read_config(app_dir: Path, relative: str) -> dict[str, Any]:
    """Parse one config file of an app; errors name the file."""
    path = app_dir / relative
    if not path.is_file():
        raise ConfigError(f"{path}: file not found (an app needs {relative})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    version = data.get("format_version", 2)
    if version not in (1, 2):
        raise ConfigError(f"{path}: format_version: expected 1 or 2, got {version!r}")
    return data


def field_of(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    if key not in obj:
        if default is ...:
            raise ConfigError(f"{where}: missing key {key!r}")
        return default
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}.{key}: expected {expected}, got {type(value).__name__} {value!r}")
    return value


def component_specs(config: dict[str, Any], section: str, file_name: str) -> list[ComponentSpec]:
    """The `{id, path, args}` entries of `section` (components or workflows)."""
    entries = field_of(config, section, list, file_name, default=[])
    specs = []
    for index, entry in enumerate(entries):
        where = f"{file_name}: {section}[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected an object with id, path and args")
        specs.append(
            ComponentSpec(
                id=field_of(entry, "id", str, where, default=f"{section}_{index}"),
                path=field_of(entry, "path", str, where),
                args=field_of(entry, "args", dict, where, default={}),
                where=where,
            )
        )
    ids = [spec.id for spec in specs]
    for spec in specs:
        if ids.count(spec.id) > 1:
            raise ConfigError(f"{spec.where}.id: {spec.id!r} is used more than once")
    return specs


class ClassResolver:
    """Finds classes by dotted path: in an app's custom/ folder first, then among importable modules."""

    def __init__(self, custom_dir: Path | None) -> None:
        self.custom_dir = custom_dir
        self._loaded: dict[str, types.ModuleType] = {}
        self._prefix = f"_fl_app_{uuid.uuid4().hex[:8]}"  # keeps two apps' custom modules apart

    def resolve(self, path: str, where: str) -> type:
        """The class named by `path`; ConfigError (naming `where`) if it cannot be found."""
        path = FLARE_ALIASES.get(path, path)
        module_name, _, class_name = path.rpartition(".")
        if not module_name:
            raise ConfigError(f"{where}.path: {path!r} is not of the form module.Class")
        module = self._custom_module(module_name, where) or self._import(module_name, path, where)
        cls = getattr(module, class_name, None)
        if not isinstance(cls, type):
            raise ConfigError(f"{where}.path: module {module_name!r} has no class {class_name!r}")
        return cls

    def _custom_module(self, module_name: str, where: str) -> types.ModuleType | None:
        if self.custom_dir is None:
            return None
        file = self.custom_dir.joinpath(*module_name.split(".")).with_suffix(".py")
        if not file.is_file():
            return None
        if module_name in self._loaded:
            return self._loaded[module_name]
        unique = f"{self._prefix}.{module_name}"
        spec = importlib.util.spec_from_file_location(unique, file)
        if spec is None or spec.loader is None:
            raise ConfigError(f"{where}.path: cannot load {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[unique] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(unique, None)
            raise ConfigError(f"{where}.path: importing {file} failed: {exc!r}") from exc
        self._loaded[module_name] = module
        return module

    @staticmethod
    def _import(module_name: str, path: str, where: str) -> types.ModuleType:
        try:
            return importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"{where}.path: cannot find {path!r} (not in the app's custom/ folder, not importable: {exc})"
            ) from exc


def _type_matches(value: Any, annotation: Any) -> bool:
    """Best-effort check of a JSON value against a simple annotation; unknown annotations pass."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_matches(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    target = origin or annotation
    if target is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if target is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if target in (str, bool, dict, list):
        return isinstance(value, target)
    return True


def build(cls: type, args: dict[str, Any], where: str) -> Any:
    """Instantiate `cls(**args)`, checking names and simple types first so errors name the argument."""
    try:
        signature = inspect.signature(cls)
        hints = typing.get_type_hints(vars(cls).get("__init__") or cls.__init__)  # type: ignore[misc]
    except (TypeError, ValueError, NameError):
        signature, hints = None, {}
    if signature is not None:
        try:
            signature.bind(**args)
        except TypeError as exc:
            params = ", ".join(n for n in signature.parameters if n not in ("args", "kwargs"))
            raise ConfigError(f"{where}.args: {exc} (accepted: {params})") from exc
        for name, value in args.items():
            if name in hints and not _type_matches(value, hints[name]):
                expected = getattr(hints[name], "__name__", str(hints[name]))
                raise ConfigError(f"{where}.args.{name}: expected {expected}, got {type(value).__name__} {value!r}")
    try:
        return cls(**args)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{where}.args: {cls.__name__} refused them: {exc}") from exc


def build_components(specs: list[ComponentSpec], resolver: ClassResolver) -> dict[str, Any]:
    """Build every spec, keyed by id."""
    return {spec.id: build(resolver.resolve(spec.path, spec.where), spec.args, spec.where) for spec in specs}
