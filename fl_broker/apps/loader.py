"""Build a deployed app's server side (components + workflows) or client side (executors by task).

Components are built in config order (nested ones first) while the app's imports are in force (its custom/
folder as a package of its own, `nvflare` as fl-broker's layer: app_imports). FLARE-style components are
wrapped where a workflow or the worker needs fl-broker's kind (flare_adapters), and every built object is
registered with the app's FLARE engine, which delivers events to their handle_event. An app holds its
imports until `end_run`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fl_broker.apps import app_imports
from fl_broker.apps.config import (
    CLIENT_CONFIG,
    SERVER_CONFIG,
    ClassResolver,
    ComponentSpec,
    build,
    build_component,
    build_components,
    build_nested,
    component_specs,
    field_of,
    read_config,
)
from fl_broker.apps.filter_config import filter_chains
from fl_broker.apps.flare_adapters import Adapters
from fl_broker.errors import ConfigError
from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.events import EventHook
from fl_broker.fl.executor import Executor
from fl_broker.fl.filters import NO_FILTERS, FilterChains
from fl_broker.fl.workflow import ComponentArg, Workflow, WorkflowEntry
from fl_broker.flare.runtime import FlareEngine

LOG_CONFIG = "resources/log.config"


@dataclass
class _LoadedApp:
    """What the server and client sides share: the FLARE engine, and the imports held until end_run."""

    engine: FlareEngine = field(default_factory=FlareEngine, kw_only=True)
    resolver: ClassResolver | None = field(default=None, kw_only=True, repr=False)
    _held: bool = field(default=False, kw_only=True, repr=False)

    def __post_init__(self) -> None:
        # Let the imports go when the app is dropped without end_run (a load whose run never started).
        self._let_go = weakref.finalize(self, _let_go, self.resolver) if self._held else None

    @property
    def hooks(self) -> list[EventHook]:
        """Lifecycle hooks that deliver fl-broker's events to the components under FLARE's names."""
        return [self.engine.on_event]

    def start_run(self, context: RunContext, abort_signal: Signal | None = None) -> None:
        """The run starts: FLARE's START_RUN (and ABOUT_TO_START_RUN) go to every component."""
        self.engine.start_run(context, abort_signal)

    def end_run(self) -> None:
        """The run is over: END_RUN goes to every component, then the app's imports are let go (once; later
        calls do nothing)."""
        if not self._held:
            return
        self._held = False
        try:
            self.engine.end_run()
        finally:
            if self._let_go is not None:
                self._let_go()


def _let_go(resolver: ClassResolver | None) -> None:
    app_imports.release_nvflare()
    if resolver is not None:
        resolver.close()


@dataclass
class ServerApp(_LoadedApp):
    """The server side of an app: its components and its workflows, in the order they run."""

    components: dict[str, Any]
    workflows: list[WorkflowEntry]
    filters: FilterChains = NO_FILTERS  # task_data_filters / task_result_filters

    @property
    def workflow(self) -> Workflow:
        """The first workflow (all there is in a one-workflow app)."""
        return self.workflows[0].workflow


@dataclass
class ClientApp(_LoadedApp):
    """The client side of an app: one executor per task name."""

    executors: dict[str, Executor]
    components: dict[str, Any]
    filters: FilterChains = NO_FILTERS  # task_data_filters / task_result_filters


@contextmanager
def _app_imports(app_dir: Path) -> Iterator[ClassResolver]:
    """The app's imports in force while it is built; let go again if building fails."""
    app_imports.acquire_nvflare()
    resolver = ClassResolver(app_dir / "custom")
    try:
        with resolver.package.importing():
            yield resolver
    except BaseException:
        app_imports.release_nvflare()
        resolver.close()
        raise


def _engine_with_components(
    config: dict[str, Any], file_name: str, resolver: ClassResolver
) -> tuple[FlareEngine, dict[str, Any]]:
    """The app's FLARE engine, with the config's `components` built and registered under their ids."""
    engine = FlareEngine()
    components = build_components(component_specs(config, "components", file_name), resolver)
    for component_id, component in components.items():
        engine.add(component, component_id)
    return engine, components


def _bind(engine: FlareEngine, obj: Any) -> None:
    """Give the engine to an object that asks for it (FLARE-named workflows), and register it for events."""
    bind: Callable[[FlareEngine], None] | None = getattr(obj, "bind_engine", None)
    if callable(bind):
        bind(engine)
    engine.add(obj)


def load_server_app(app_dir: Path) -> ServerApp:
    """Read config/config_fed_server.json and build it. ConfigError names the file and key."""
    config = read_config(app_dir, SERVER_CONFIG)
    file_name = Path(SERVER_CONFIG).name
    with _app_imports(app_dir) as resolver:
        engine, components = _engine_with_components(config, file_name, resolver)
        workflow_specs = component_specs(config, "workflows", file_name)  # ids checked unique there
        if not workflow_specs:
            raise ConfigError(f"{app_dir / SERVER_CONFIG}: workflows: expected at least one workflow")
        adapters = Adapters(engine)
        workflows = [
            WorkflowEntry(spec.id, _build_workflow(spec, components, resolver, adapters)) for spec in workflow_specs
        ]
        for entry in workflows:
            _bind(engine, entry.workflow)
        filters = filter_chains(config, file_name, resolver, "server")
    return ServerApp(
        components=components, workflows=workflows, filters=filters, engine=engine, resolver=resolver, _held=True
    )


def _build_workflow(
    spec: ComponentSpec, components: dict[str, Any], resolver: ClassResolver, adapters: Adapters
) -> Workflow:
    """One `workflows` entry, its component ids replaced by the app's (shared) components."""
    cls = resolver.resolve(spec.path, spec.where)
    if not issubclass(cls, Workflow):
        raise ConfigError(f"{spec.where}.path: {spec.path!r} is not a workflow (expected e.g. ScatterAndGather)")
    where = f"{spec.where}.args"
    args = with_components(cls.component_args, build_nested(spec.args, resolver, where), components, where, adapters)
    workflow: Workflow = build(cls, args, spec.where)
    return workflow


def with_components(
    refs: tuple[ComponentArg, ...],
    args: dict[str, Any],
    components: dict[str, Any],
    where: str,
    adapters: Adapters | None = None,
) -> dict[str, Any]:
    """`args` with each component id (e.g. `aggregator_id`) replaced by the component it names, under the
    constructor's argument name (e.g. `aggregator`), as the kind the workflow needs (a FLARE-style component
    through its adapter). An optional reference (no default id) left out or "" passes None. ConfigError
    naming `where` and the key if wrong."""
    adapters = adapters or Adapters(FlareEngine())
    built = {name: value for name, value in args.items() if name not in {ref.key for ref in refs}}
    for ref in refs:
        if ref.param in args:
            raise ConfigError(f"{where}.{ref.param}: give the component's id as {ref.key!r} instead")
        component_id = args.get(ref.key, ref.default_id)
        if not isinstance(component_id, str):
            raise ConfigError(f"{where}.{ref.key}: expected a component id (str), got {component_id!r}")
        if not component_id and not ref.default_id:
            built[ref.param] = None
            continue
        component = components.get(component_id)
        if component is None:
            raise ConfigError(f"{where}.{ref.key}: no component with id {component_id!r}")
        usable = adapters.as_kind(ref.kind, component)
        if usable is None:
            raise ConfigError(
                f"{where}.{ref.key}: component {component_id!r} is a {type(component).__name__}, "
                f"expected a {ref.kind.__name__}"
            )
        built[ref.param] = usable
    return built


def load_client_app(app_dir: Path) -> ClientApp:
    """Read config/config_fed_client.json and build its executors. ConfigError names the file and key."""
    config = read_config(app_dir, CLIENT_CONFIG)
    file_name = Path(CLIENT_CONFIG).name
    with _app_imports(app_dir) as resolver:
        engine, components = _engine_with_components(config, file_name, resolver)
        executors = _build_executors(config, file_name, resolver, Adapters(engine))
        if not executors:
            raise ConfigError(f"{app_dir / CLIENT_CONFIG}: executors: expected at least one executor")
        filters = filter_chains(config, file_name, resolver, "client")
    return ClientApp(
        executors=executors, components=components, filters=filters, engine=engine, resolver=resolver, _held=True
    )


def _build_executors(
    config: dict[str, Any], file_name: str, resolver: ClassResolver, adapters: Adapters
) -> dict[str, Executor]:
    executors: dict[str, Executor] = {}
    for index, entry in enumerate(field_of(config, "executors", list, file_name)):
        where = f"{file_name}: executors[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected an object with tasks and executor")
        tasks = field_of(entry, "tasks", list, where)
        built = build_component(field_of(entry, "executor", dict, where), resolver, f"{where}.executor")
        executor = adapters.as_kind(Executor, built)
        if executor is None:
            raise ConfigError(f"{where}.executor.path: {type(built).__name__} is not an Executor")
        adapters.engine.add(built)
        for task in tasks:
            if not isinstance(task, str):
                raise ConfigError(f"{where}.tasks: expected task names (str), got {task!r}")
            if task in executors:
                raise ConfigError(f"{where}.tasks: task {task!r} already has an executor")
            executors[task] = executor
    return executors
