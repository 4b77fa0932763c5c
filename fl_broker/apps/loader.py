"""Build a deployed app's server side (components + workflow) or client side (executors by task)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fl_broker.apps.config import (
    CLIENT_CONFIG,
    SERVER_CONFIG,
    ClassResolver,
    ComponentSpec,
    build,
    build_components,
    component_specs,
    field_of,
    read_config,
)
from fl_broker.apps.filter_config import filter_chains
from fl_broker.errors import ConfigError
from fl_broker.fl.executor import Executor
from fl_broker.fl.filters import NO_FILTERS, FilterChains
from fl_broker.fl.workflow import ComponentArg, Workflow, WorkflowEntry

LOG_CONFIG = "resources/log.config"


@dataclass
class ServerApp:
    """The server side of an app: its components and its workflows, in the order they run."""

    components: dict[str, Any]
    workflows: list[WorkflowEntry]
    filters: FilterChains = NO_FILTERS  # task_data_filters / task_result_filters

    @property
    def workflow(self) -> Workflow:
        """The first workflow (all there is in a one-workflow app)."""
        return self.workflows[0].workflow


@dataclass
class ClientApp:
    """The client side of an app: one executor per task name."""

    executors: dict[str, Executor]
    components: dict[str, Any]
    filters: FilterChains = NO_FILTERS  # task_data_filters / task_result_filters


def load_server_app(app_dir: Path) -> ServerApp:
    """Read config/config_fed_server.json and build it. ConfigError names the file and key."""
    config = read_config(app_dir, SERVER_CONFIG)
    file_name = Path(SERVER_CONFIG).name
    resolver = ClassResolver(app_dir / "custom")
    components = build_components(component_specs(config, "components", file_name), resolver)
    workflow_specs = component_specs(config, "workflows", file_name)  # ids checked unique there
    if not workflow_specs:
        raise ConfigError(f"{app_dir / SERVER_CONFIG}: workflows: expected at least one workflow")
    workflows = [WorkflowEntry(spec.id, _build_workflow(spec, components, resolver)) for spec in workflow_specs]
    filters = filter_chains(config, file_name, resolver, "server")
    return ServerApp(components=components, workflows=workflows, filters=filters)


def _build_workflow(spec: ComponentSpec, components: dict[str, Any], resolver: ClassResolver) -> Workflow:
    """One `workflows` entry, its component ids replaced by the app's (shared) components."""
    cls = resolver.resolve(spec.path, spec.where)
    if not issubclass(cls, Workflow):
        raise ConfigError(f"{spec.where}.path: {spec.path!r} is not a workflow (expected e.g. ScatterAndGather)")
    args = with_components(cls.component_args, spec.args, components, f"{spec.where}.args")
    workflow: Workflow = build(cls, args, spec.where)
    return workflow


def with_components(
    refs: tuple[ComponentArg, ...], args: dict[str, Any], components: dict[str, Any], where: str
) -> dict[str, Any]:
    """`args` with each component id (e.g. `aggregator_id`) replaced by the component it names, under the
    constructor's argument name (e.g. `aggregator`). ConfigError naming `where` and the key if wrong."""
    built = {name: value for name, value in args.items() if name not in {ref.key for ref in refs}}
    for ref in refs:
        if ref.param in args:
            raise ConfigError(f"{where}.{ref.param}: give the component's id as {ref.key!r} instead")
        component_id = args.get(ref.key, ref.default_id)
        if not isinstance(component_id, str):
            raise ConfigError(f"{where}.{ref.key}: expected a component id (str), got {component_id!r}")
        component = components.get(component_id)
        if component is None:
            raise ConfigError(f"{where}.{ref.key}: no component with id {component_id!r}")
        if not isinstance(component, ref.kind):
            raise ConfigError(
                f"{where}.{ref.key}: component {component_id!r} is a {type(component).__name__}, "
                f"expected a {ref.kind.__name__}"
            )
        built[ref.param] = component
    return built


def load_client_app(app_dir: Path) -> ClientApp:
    """Read config/config_fed_client.json and build its executors. ConfigError names the file and key."""
    config = read_config(app_dir, CLIENT_CONFIG)
    file_name = Path(CLIENT_CONFIG).name
    resolver = ClassResolver(app_dir / "custom")
    components = build_components(component_specs(config, "components", file_name), resolver)
    executors: dict[str, Executor] = {}
    for index, entry in enumerate(field_of(config, "executors", list, file_name)):
        where = f"{file_name}: executors[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected an object with tasks and executor")
        tasks = field_of(entry, "tasks", list, where)
        spec = field_of(entry, "executor", dict, where)
        executor = build(
            resolver.resolve(field_of(spec, "path", str, f"{where}.executor"), f"{where}.executor"),
            field_of(spec, "args", dict, f"{where}.executor", default={}),
            f"{where}.executor",
        )
        if not isinstance(executor, Executor):
            raise ConfigError(f"{where}.executor.path: {type(executor).__name__} is not an Executor")
        for task in tasks:
            if not isinstance(task, str):
                raise ConfigError(f"{where}.tasks: expected task names (str), got {task!r}")
            if task in executors:
                raise ConfigError(f"{where}.tasks: task {task!r} already has an executor")
            executors[task] = executor
    if not executors:
        raise ConfigError(f"{app_dir / CLIENT_CONFIG}: executors: expected at least one executor")
    filters = filter_chains(config, file_name, resolver, "client")
    return ClientApp(executors=executors, components=components, filters=filters)
