"""What a server workflow (controller) is given to run with, and the base class workflows implement."""

from __future__ import annotations

import copy
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from fl_broker.fl.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.events import Event, EventHook, fire
from fl_broker.fl.model import ModelLearnable, ShareableGenerator
from fl_broker.fl.persistor import ModelPersistor
from fl_broker.wire.messages import Shareable

log = logging.getLogger(__name__)


class Settle(Protocol):
    """What a result is settled through: the transport's Delivery, or a test's stand-in."""

    def ack(self) -> None:
        """The result was used: the broker may forget it."""

    def reject(self, reason: str) -> None:
        """The result was not used: dead-letter it with `reason`."""


@dataclass
class TaskResult:
    """One site's answer to a task. Call exactly one of accept() or refuse(reason)."""

    site: str
    task_id: str
    round: int | None
    shareable: Shareable
    delivery: Settle = field(repr=False)  # the message it came in, settled by accept() / refuse()

    def accept(self) -> None:
        """The result is taken into account; it may be forgotten by the broker."""
        self.delivery.ack()

    def refuse(self, reason: str) -> None:
        """The result is not used; it is kept in the dead-letter queue with `reason`."""
        self.delivery.reject(reason)


class TaskChannel(Protocol):
    """How a controller reaches clients: send a task to sites, then take results as they arrive."""

    def send(self, task: Shareable, targets: Sequence[str], *, round: int) -> None:
        """Send `task` (its task_id already set) to each target site."""

    def receive(self, timeout: float) -> TaskResult | None:
        """The next result, or None if none arrived within `timeout` seconds."""


@dataclass
class WorkflowRuntime:
    """Everything a workflow needs from the server, and nothing about queues."""

    context: RunContext
    channel: TaskChannel
    abort_signal: Signal
    live_clients: Callable[[], list[str]]  # sites whose client app is started and that are heartbeating
    hooks: list[EventHook] = field(default_factory=list)  # e.g. the event stream and the progress tracker
    workflow_id: str = ""  # the config's id of the workflow this runtime is given to

    def fire(self, event_type: str, round: int | None = None, **data: Any) -> None:
        """Send a lifecycle event to every hook."""
        fire(self.hooks, Event(type=event_type, run=self.context.run_number, round=round, data=data))

    def checkpoint(self) -> Checkpoint | None:
        """The last round this workflow committed in this run, if any (e.g. before the server restarted); a
        commit of another workflow of the app is not this one's."""
        checkpoint = read_checkpoint(self.context.run_dir)
        if checkpoint is None or checkpoint.workflow not in ("", self.workflow_id):
            return None
        return checkpoint

    def commit(self, next_round: int, model: ModelLearnable, state: dict[str, Any] | None = None) -> None:
        """Commit `model` as the global model and `next_round` as the round to resume at, atomically, with the
        `state` of the workflow's stateful components (see checkpoint.Stateful)."""
        checkpoint = Checkpoint(next_round=next_round, model=model, workflow=self.workflow_id, state=state or {})
        write_checkpoint(self.context.run_dir, checkpoint)


@dataclass(frozen=True)
class ComponentArg:
    """A workflow argument that the config gives as a component's id (FLARE's `aggregator_id` ...): the
    loader looks the component up and passes it to the constructor as `param`."""

    key: str  # in the config, e.g. "aggregator_id"
    param: str  # the constructor's argument, e.g. "aggregator"
    kind: type  # what the component must be
    default_id: str  # the id used when the config leaves `key` out


# The references most workflows take, under FLARE's keys.
PERSISTOR_ARG = ComponentArg("persistor_id", "persistor", ModelPersistor, "persistor")
SHAREABLE_GENERATOR_ARG = ComponentArg(
    "shareable_generator_id", "shareable_generator", ShareableGenerator, "shareable_generator"
)


def check_at_least(low: float, **values: float) -> None:
    """A workflow argument check: ValueError naming the first of `values` (name=value) below `low`."""
    for name, value in values.items():
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")


class Workflow(ABC):
    """A server-side controller configured under `workflows` in config_fed_server.json. Its collaborators
    come through its constructor; `component_args` says which config arguments name them."""

    component_args: ClassVar[tuple[ComponentArg, ...]] = ()

    @abstractmethod
    def run(self, runtime: WorkflowRuntime) -> None:
        """Run to completion, or until `runtime.abort_signal` is triggered."""


@dataclass(frozen=True)
class WorkflowEntry:
    """One entry of the config's `workflows` list: its id and the built workflow."""

    id: str
    workflow: Workflow


def run_in_order(entries: Sequence[WorkflowEntry], runtime: WorkflowRuntime) -> None:
    """Run the app's workflows one after the other, in the config's order, each with its own id in its
    runtime. A run that committed a round before (the server restarted) resumes in the workflow that
    committed it, the ones before it being done; an abort ends the current one and skips the rest."""
    start = _resume_index(entries, read_checkpoint(runtime.context.run_dir))
    if start:
        log.info("run %d resumes in workflow %r", runtime.context.run_number, entries[start].id)
    for index, entry in enumerate(entries[start:], start):
        log.info("workflow %r (%d of %d) starts", entry.id, index + 1, len(entries))
        own = copy.copy(runtime)  # the same channel, signal and hooks; its own workflow id
        own.workflow_id = entry.id
        entry.workflow.run(own)
        if runtime.abort_signal.triggered:
            skipped = [later.id for later in entries[index + 1 :]]
            if skipped:
                log.info("aborted in workflow %r: %s not run", entry.id, ", ".join(skipped))
            return


def _resume_index(entries: Sequence[WorkflowEntry], checkpoint: Checkpoint | None) -> int:
    """Where a run resumes: the workflow that made the checkpoint (the first if it names none)."""
    ids = [entry.id for entry in entries]
    return ids.index(checkpoint.workflow) if checkpoint is not None and checkpoint.workflow in ids else 0
