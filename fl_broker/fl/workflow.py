"""What a server workflow (controller) is given to run with, and the base class workflows implement."""

from __future__ import annotations

import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.events import Event, EventHook, fire
from fl_broker.wire.messages import Shareable

log = logging.getLogger(__name__)

PROGRESS_FILE = "models/progress.json"


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

    def fire(self, event_type: str, round: int | None = None, **data: Any) -> None:
        """Send a lifecycle event to every hook."""
        fire(self.hooks, Event(type=event_type, run=self.context.run_number, round=round, data=data))

    def saved_next_round(self) -> int | None:
        """The round to resume at, if this run saved progress before (e.g. the server restarted)."""
        path = self.context.run_dir / PROGRESS_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            return int(state["next_round"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable progress file %s: %s", path, exc)
            return None

    def save_next_round(self, next_round: int) -> None:
        """Persist the round to resume at (after the model of the previous round is saved)."""
        _write_atomically(self.context.run_dir / PROGRESS_FILE, json.dumps({"next_round": next_round}))


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a crash leaves either the old or the new file, never half of one


@dataclass(frozen=True)
class ComponentArg:
    """A workflow argument that the config gives as a component's id (FLARE's `aggregator_id` ...): the
    loader looks the component up and passes it to the constructor as `param`."""

    key: str  # in the config, e.g. "aggregator_id"
    param: str  # the constructor's argument, e.g. "aggregator"
    kind: type  # what the component must be
    default_id: str  # the id used when the config leaves `key` out


class Workflow(ABC):
    """A server-side controller configured under `workflows` in config_fed_server.json. Its collaborators
    come through its constructor; `component_args` says which config arguments name them."""

    component_args: ClassVar[tuple[ComponentArg, ...]] = ()

    @abstractmethod
    def run(self, runtime: WorkflowRuntime) -> None:
        """Run to completion, or until `runtime.abort_signal` is triggered."""
