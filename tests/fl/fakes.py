"""In-memory stand-ins for the controller's collaborators: scripted clients behind a TaskChannel."""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fl_broker.fl.aggregation import InTimeAccumulateWeightedAggregator
from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.events import Event
from fl_broker.fl.model import FullModelShareableGenerator, ModelLearnable
from fl_broker.fl.persistor import ModelPersistor
from fl_broker.fl.progress import Progress, ProgressTracker
from fl_broker.fl.scatter_gather import ScatterAndGather
from fl_broker.fl.workflow import TaskResult, WorkflowRuntime
from fl_broker.wire.messages import DXO, DataKind, Shareable

# A client behaviour: given (site, task, round) return the result Shareable(s) to send, [] for silence.
Behaviour = Callable[[str, Shareable, int], list[Shareable]]


def add_delta(delta: float = 1.0) -> Behaviour:
    """The hello-numpy trainer: add `delta` to every weight."""

    def behave(site: str, task: Shareable, round_: int) -> list[Shareable]:
        assert task.dxo is not None
        data = {k: v + delta for k, v in task.dxo.data.items()}
        result = DXO(DataKind.WEIGHTS, data, meta={"NUM_STEPS_CURRENT_ROUND": 1}).to_shareable()
        return [result]

    return behave


@dataclass
class Settled:
    """How the controller settled one result."""

    site: str
    round: int | None
    reason: str | None


@dataclass
class _Recorded:
    """Stands in for a result's delivery: records how the controller settled it."""

    settled: list[Settled]
    site: str
    round: int | None

    def ack(self) -> None:
        self.settled.append(Settled(self.site, self.round, None))

    def reject(self, reason: str) -> None:
        self.settled.append(Settled(self.site, self.round, reason))


@dataclass
class FakeChannel:
    """A TaskChannel whose clients answer at once according to their behaviour."""

    behaviours: dict[str, Behaviour]
    inbox: queue.Queue[TaskResult] = field(default_factory=queue.Queue)
    settled: list[Settled] = field(default_factory=list)
    sent: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)

    def send(self, task: Shareable, targets: Sequence[str], *, round: int) -> None:
        self.sent.append((round, tuple(targets)))
        for site in targets:
            for result in self.behaviours[site](site, task, round):
                result.task_id = result.task_id or task.task_id
                result.cookie_jar = result.cookie_jar or dict(task.cookie_jar)
                self.push(site, round, result)

    def push(self, site: str, round_: int | None, result: Shareable) -> None:
        delivery = _Recorded(self.settled, site, round_)
        self.inbox.put(TaskResult(site=site, task_id=result.task_id, round=round_, shareable=result, delivery=delivery))

    def receive(self, timeout: float) -> TaskResult | None:
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def refused(self) -> list[Settled]:
        return [s for s in self.settled if s.reason is not None]


class MemoryPersistor(ModelPersistor):
    """Keeps every saved model, so tests can check each round's value."""

    def __init__(self, initial: ModelLearnable) -> None:
        self.initial = initial
        self.saved: list[ModelLearnable] = []

    def load_model(self, context: RunContext) -> ModelLearnable:
        return dict(self.saved[-1]) if self.saved else dict(self.initial)

    def save_model(self, model: ModelLearnable, context: RunContext) -> None:
        self.saved.append({k: np.array(v, copy=True) for k, v in model.items()})


INITIAL = {"numpy_key": np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)}


def make_workflow(
    *, aggregator: InTimeAccumulateWeightedAggregator | None = None, persistor: ModelPersistor | None = None, **args
) -> tuple[ScatterAndGather, MemoryPersistor | ModelPersistor]:
    """A ScatterAndGather with real components (persistor in memory)."""
    persistor = persistor or MemoryPersistor(INITIAL)
    workflow = ScatterAndGather(
        aggregator=aggregator or InTimeAccumulateWeightedAggregator(),
        persistor=persistor,
        shareable_generator=FullModelShareableGenerator(),
        **args,
    )
    return workflow, persistor


@dataclass
class RecordingRuntime(WorkflowRuntime):
    """A runtime that records the events fired and tracks progress from them, as the server does."""

    events: list[Event] = field(default_factory=list)
    tracker: ProgressTracker = field(default_factory=ProgressTracker)

    def __post_init__(self) -> None:
        self.hooks += [self.events.append, self.tracker]

    @property
    def progress(self) -> Progress:
        return self.tracker.progress


def make_runtime(tmp_path: Path, channel: FakeChannel, sites: list[str] | None = None) -> RecordingRuntime:
    """A runtime whose live clients are the channel's sites."""
    live = sites if sites is not None else sorted(channel.behaviours)
    context = RunContext("server", 1, tmp_path / "run_1", tmp_path / "run_1" / "app_server")
    return RecordingRuntime(context=context, channel=channel, abort_signal=Signal(), live_clients=lambda: live)
