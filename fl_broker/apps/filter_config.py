"""The `task_data_filters` / `task_result_filters` lists of an app's configs (FLARE's shape), built into
FilterChains. Each list holds `{"tasks": [names], "filters": [{"path" or "name": ..., "args": {...}}]}`;
a task may appear in one entry of a list only. Errors are ConfigErrors naming the file and the key."""

from __future__ import annotations

from typing import Any

from fl_broker.apps.config import ClassResolver, build, field_of
from fl_broker.errors import ConfigError
from fl_broker.fl.filters import FilterChains, FilterLike
from fl_broker.privacy import FILTER_NAMES

SECTIONS = ("task_data_filters", "task_result_filters")


def filter_chains(config: dict[str, Any], file_name: str, resolver: ClassResolver, side: str) -> FilterChains:
    """Both filter lists of one config file, built."""
    data, result = (_section(config, section, file_name, resolver) for section in SECTIONS)
    return FilterChains(task_data=data, task_result=result, side=side)


def filter_class_paths(config: dict[str, Any], file_name: str) -> list[tuple[str, str]]:
    """(class path, where) of every filter the config names, `name`s turned into their paths (for a site's
    policy, which must see every class an app would build)."""
    found = []
    for section in SECTIONS:
        for _, _, specs in _entries(config, section, file_name):
            found += [(_class_path(spec, at), at) for at, spec in specs]
    return found


def filter_list(specs: Any, where: str, resolver: ClassResolver) -> list[FilterLike]:
    """A bare list of filter specs (e.g. SecureTrainer's `result_filters`), built in order."""
    if not isinstance(specs, list):
        raise ConfigError(f"{where}: expected a list of filters ({{path or name, args}}), got {specs!r}")
    return [_build_filter(spec, at, resolver) for at, spec in _each_spec(specs, where)]


def _section(
    config: dict[str, Any], section: str, file_name: str, resolver: ClassResolver
) -> dict[str, list[FilterLike]]:
    table: dict[str, list[FilterLike]] = {}
    for where, tasks, specs in _entries(config, section, file_name):
        filters = [_build_filter(spec, at, resolver) for at, spec in specs]
        for task in tasks:
            if task in table:
                raise ConfigError(f"{where}.tasks: task {task!r} already has {section} (one entry per task)")
            table[task] = filters
    return table


Spec = tuple[str, dict[str, Any]]  # (where, the filter's {path or name, args})


def _entries(config: dict[str, Any], section: str, file_name: str) -> list[tuple[str, list[str], list[Spec]]]:
    """(where, tasks, filter specs) of each entry of `section`, their shapes checked."""
    found = []
    for index, entry in enumerate(field_of(config, section, list, file_name, default=[])):
        where = f"{file_name}: {section}[{index}]"
        found.append((where, _tasks(entry, where), _specs(entry, where)))
    return found


def _tasks(entry: Any, where: str) -> list[str]:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object with tasks and filters")
    tasks = field_of(entry, "tasks", list, where)
    if not tasks or not all(isinstance(task, str) and task for task in tasks):
        raise ConfigError(f"{where}.tasks: expected a non-empty list of task names, got {tasks!r}")
    return tasks


def _specs(entry: dict[str, Any], where: str) -> list[Spec]:
    filters = field_of(entry, "filters", list, where)
    if not filters:
        raise ConfigError(f"{where}.filters: expected at least one filter")
    return _each_spec(filters, f"{where}.filters")


def _each_spec(filters: list[Any], where: str) -> list[Spec]:
    """(where, spec) of each entry of a list of filter specs, each checked to be an object."""
    specs = []
    for index, spec in enumerate(filters):
        at = f"{where}[{index}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{at}: expected an object with path (or name) and args")
        specs.append((at, spec))
    return specs


def _class_path(spec: dict[str, Any], where: str) -> str:
    """The spec's `path`, or the path its `name` stands for (FLARE's short names of its filters)."""
    if "path" in spec:
        path: str = field_of(spec, "path", str, where)
        return path
    if "name" not in spec:
        raise ConfigError(f"{where}: expected a path (module.Class) or a name (e.g. ExcludeVars)")
    name = field_of(spec, "name", str, where)
    if name not in FILTER_NAMES:
        raise ConfigError(f"{where}.name: no filter is named {name!r} (known: {', '.join(sorted(FILTER_NAMES))})")
    return FILTER_NAMES[name]


def _build_filter(spec: dict[str, Any], where: str, resolver: ClassResolver) -> FilterLike:
    cls = resolver.resolve(_class_path(spec, where), where)
    made = build(cls, field_of(spec, "args", dict, where, default={}), where)
    if not isinstance(made, FilterLike):
        raise ConfigError(f"{where}.path: {cls.__name__} is not a filter (it has no process(shareable, fl_ctx))")
    return made
