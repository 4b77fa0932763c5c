"""Components given inside another component's arguments, FLARE style: `{"path": "module.Class", "args":
{...}}`, the path resolved against the deployed app's `custom/` folder first, then importable modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from fl_broker.apps.config import ClassResolver, build, field_of
from fl_broker.errors import ConfigError

T = TypeVar("T")

ComponentSpec = dict[str, Any] | str | object  # {"path", "args"}, "module.Class", or the object itself


def build_component(spec: ComponentSpec, custom_dir: Path | None, kind: type[T], where: str) -> T:
    """The object `spec` describes: an instance of `kind` given as is, a `{"path": ..., "args": ...}` dict
    or a bare "module.Class" path. ConfigError naming `where` if it cannot be built or is not a `kind`."""
    if isinstance(spec, kind) and not isinstance(spec, (dict, str)):
        return spec
    if isinstance(spec, str):
        spec = {"path": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected {{'path': 'module.Class', 'args': {{...}}}}, got {spec!r}")
    unknown = sorted(set(spec) - {"path", "args", "id", "name"})
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown} (expected path and args)")
    resolver = ClassResolver(custom_dir)
    cls = resolver.resolve(field_of(spec, "path", str, where), where)
    built = build(cls, field_of(spec, "args", dict, where, default={}), where)
    if not isinstance(built, kind):
        raise ConfigError(f"{where}.path: {type(built).__name__} is not a {kind.__name__}")
    return built
