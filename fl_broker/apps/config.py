"""Load an app's FLARE-shaped JSON configs and build its components.

A component is `{"path": "module.Class"}` or `{"name": "Class"}` (a built-in, fl_broker.apps.builtins) with
optional `args`; an argument that is itself such an object is built first and passed as the object (FLARE's
nested components). `path` resolves against the app's `custom/` folder first (see app_imports), then FLARE's
names (onto fl_broker.flare), then importable modules. Every error is a ConfigError naming the file, the key
and what was expected; a FLARE name fl-broker does not run is named with the closest one it does.
"""

from __future__ import annotations

import importlib
import inspect
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fl_broker.apps import builtins
from fl_broker.apps.app_imports import CustomPackage
from fl_broker.apps.builtins import FLARE_ALIASES
from fl_broker.errors import ConfigError

SERVER_CONFIG = "config/config_fed_server.json"
CLIENT_CONFIG = "config/config_fed_client.json"

__all__ = ["FLARE_ALIASES", "ClassResolver", "ComponentSpec", "build", "build_component", "component_specs"]


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
            raise ConfigError(f"{where}: expected an object with id, path (or name) and args")
        specs.append(
            ComponentSpec(
                id=field_of(entry, "id", str, where, default=f"{section}_{index}"),
                path=spec_path(entry, where),
                args=field_of(entry, "args", dict, where, default={}),
                where=where,
            )
        )
    ids = [spec.id for spec in specs]
    for spec in specs:
        if ids.count(spec.id) > 1:
            raise ConfigError(f"{spec.where}.id: {spec.id!r} is used more than once")
    return specs


def spec_path(entry: dict[str, Any], where: str) -> str:
    """The class path of a component entry: its `path`, else the built-in its `name` names (FLARE's rule:
    path wins when both are there)."""
    if "path" in entry or "name" not in entry:
        path: str = field_of(entry, "path", str, where)
        if not path:
            raise ConfigError(f"{where}.path: must not be empty")
        return path
    name = field_of(entry, "name", str, where)
    found = builtins.path_of_name(name)
    if found is None:
        raise ConfigError(f"{where}.name: {builtins.unsupported(name)}")
    return found


def is_component_config(value: Any) -> bool:
    """Whether an argument value is itself a component to build (`{"path" | "name": ..., "args": ...}`)."""
    return isinstance(value, dict) and ("path" in value or "name" in value)


def nested_paths(args: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """(path, where) of every component nested in `args`, at any depth."""
    found = []
    for key, value in args.items():
        if is_component_config(value):
            inner = f"{where}.{key}"
            found.append((spec_path(value, inner), inner))
            found += nested_paths(field_of(value, "args", dict, inner, default={}), f"{inner}.args")
    return found


class ClassResolver:
    """Finds classes by dotted path: in an app's custom/ folder first (one package per resolver, see
    app_imports.CustomPackage), then FLARE's built-ins, then among importable modules."""

    def __init__(self, custom_dir: Path | None) -> None:
        self.custom_dir = custom_dir
        self.package = CustomPackage(custom_dir)

    def resolve(self, path: str, where: str) -> type:
        """The class named by `path`; ConfigError (naming `where`) if it cannot be found."""
        module_name, _, class_name = path.rpartition(".")
        if not module_name:
            raise ConfigError(f"{where}.path: {path!r} is not of the form module.Class")
        if self.package.has(module_name):
            module = self._custom_module(module_name, where)
        else:
            if path.startswith(builtins.FLARE_PREFIX) and path not in builtins.supported_flare():
                raise ConfigError(f"{where}.path: {builtins.unsupported(path)}")
            module_name, _, class_name = builtins.target_of(path).rpartition(".")
            module = self._import(module_name, path, where)
        cls = getattr(module, class_name, None)
        if not isinstance(cls, type):
            hint = f" ({builtins.unsupported(path)})" if path.startswith("fl_broker.") else ""
            raise ConfigError(f"{where}.path: module {module_name!r} has no class {class_name!r}{hint}")
        return cls

    def _custom_module(self, module_name: str, where: str) -> types.ModuleType:
        base = self.custom_dir.joinpath(*module_name.split(".")) if self.custom_dir else Path(module_name)
        file = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        try:
            return self.package.import_module(module_name)
        except Exception as exc:
            raise ConfigError(f"{where}.path: importing {file} failed: {exc!r}{_nvflare_hint(exc)}") from exc

    @staticmethod
    def _import(module_name: str, path: str, where: str) -> types.ModuleType:
        try:
            return importlib.import_module(module_name)
        except ImportError as exc:
            hint = f" ({builtins.unsupported(path)})" if path.startswith("fl_broker.") else ""
            raise ConfigError(
                f"{where}.path: cannot find {path!r} (not in the app's custom/ folder, not importable: {exc}){hint}"
            ) from exc

    def close(self) -> None:
        """The app is done: forget its custom modules."""
        self.package.close()


def _nvflare_hint(exc: BaseException) -> str:
    """For an import of an nvflare module fl-broker's layer does not have: say so."""
    name = getattr(exc, "name", None) or ""
    if isinstance(exc, ImportError) and name.startswith("nvflare"):
        return f"; fl-broker's FLARE 2.0 layer has no module {name!r} (see README: Running a FLARE 2.0 app)"
    return ""


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


def build_nested(args: dict[str, Any], resolver: ClassResolver, where: str) -> dict[str, Any]:
    """`args` with every nested component config replaced by the component built from it."""
    return {
        key: build_component(value, resolver, f"{where}.{key}") if is_component_config(value) else value
        for key, value in args.items()
    }


def build_component(config: dict[str, Any], resolver: ClassResolver, where: str) -> Any:
    """One component from its config (`{"path" | "name": ..., "args": {...}}`), nested ones included.
    `where` names it in errors (e.g. "config_fed_client.json: task_result_filters[0].filters[1]")."""
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: expected an object with path (or name) and args")
    cls = resolver.resolve(spec_path(config, where), where)
    args = field_of(config, "args", dict, where, default={})
    return build(cls, build_nested(args, resolver, f"{where}.args"), where)


def build_components(specs: list[ComponentSpec], resolver: ClassResolver) -> dict[str, Any]:
    """Build every spec, keyed by id."""
    return {
        spec.id: build(
            resolver.resolve(spec.path, spec.where), build_nested(spec.args, resolver, f"{spec.where}.args"), spec.where
        )
        for spec in specs
    }
