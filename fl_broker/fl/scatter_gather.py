"""FLARE's Scatter-and-Gather workflow: broadcast the global model, gather results, aggregate, save."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fl_broker.errors import ConfigError
from fl_broker.fl.aggregation import Aggregator
from fl_broker.fl.events import EventType
from fl_broker.fl.model import ModelLearnable, ShareableGenerator
from fl_broker.fl.persistor import ModelPersistor
from fl_broker.fl.workflow import TaskResult, Workflow, WorkflowRuntime
from fl_broker.wire.messages import DataKind, Header, ReturnCode, Shareable

log = logging.getLogger(__name__)

CLIENT_WAIT_LOG_INTERVAL = 10.0


@dataclass
class RoundState:
    """What one round has gathered so far."""

    round: int
    task_id: str
    targets: frozenset[str]
    started: float = field(default_factory=time.monotonic)
    answered: set[str] = field(default_factory=set)
    accepted: int = 0
    min_reached_at: float | None = None
    model: ModelLearnable = field(default_factory=dict)  # the global model the task carried


def check_against_model(data: dict[str, Any], model: ModelLearnable, *, allow_non_finite: bool) -> str | None:
    """Why a result's arrays do not fit the global model (unknown name, shape, dtype kind, NaN/Inf), or None."""
    for name, value in data.items():
        if name not in model:
            return f"{name!r} is not in the global model"
        expected = np.asarray(model[name])
        array = np.asarray(value)
        if array.shape != expected.shape:
            return f"{name!r} has shape {array.shape}, the global model has {expected.shape}"
        if array.dtype != expected.dtype:
            return f"{name!r} has dtype {array.dtype}, the global model has {expected.dtype}"
        if not allow_non_finite and np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
            return f"{name!r} contains NaN or Inf"
    return None


class ScatterAndGather(Workflow):
    """Rounds `start_round` .. `num_rounds - 1` of train-and-average, with FLARE's arguments.

    A round ends when every target answered; otherwise `wait_time_after_min_received` seconds after
    `min_clients` results were accepted, or at `train_timeout` (0 = no limit) with what arrived.
    """

    def __init__(
        self,
        *,
        min_clients: int = 1,
        num_rounds: int = 5,
        start_round: int = 0,
        wait_time_after_min_received: float = 10,
        aggregator_id: str = "aggregator",
        persistor_id: str = "persistor",
        shareable_generator_id: str = "shareable_generator",
        train_task_name: str = "train",
        train_timeout: float = 0,
        ignore_result_error: bool = True,
        allow_non_finite: bool = False,
    ) -> None:
        for name, value, low in (("min_clients", min_clients, 1), ("num_rounds", num_rounds, 0)):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if not 0 <= start_round <= num_rounds:
            raise ValueError(f"start_round must be between 0 and num_rounds ({num_rounds}), got {start_round}")
        if wait_time_after_min_received < 0 or train_timeout < 0:
            raise ValueError("wait_time_after_min_received and train_timeout must be >= 0")
        self.min_clients = min_clients
        self.num_rounds = num_rounds
        self.start_round = start_round
        self.wait_time_after_min_received = float(wait_time_after_min_received)
        self.train_task_name = train_task_name
        self.train_timeout = float(train_timeout)
        self.ignore_result_error = ignore_result_error
        self.allow_non_finite = allow_non_finite
        self._ids = {"aggregator_id": aggregator_id, "persistor_id": persistor_id}
        self._ids["shareable_generator_id"] = shareable_generator_id
        self.aggregator: Aggregator
        self.persistor: ModelPersistor
        self.generator: ShareableGenerator

    def bind(self, components: dict[str, Any], where: str) -> None:
        expected = {
            "aggregator_id": (Aggregator, "aggregator"),
            "persistor_id": (ModelPersistor, "persistor"),
            "shareable_generator_id": (ShareableGenerator, "generator"),
        }
        for key, (kind, attr) in expected.items():
            component_id = self._ids[key]
            component = components.get(component_id)
            if component is None:
                raise ConfigError(f"{where}.args.{key}: no component with id {component_id!r}")
            if not isinstance(component, kind):
                raise ConfigError(
                    f"{where}.args.{key}: component {component_id!r} is a {type(component).__name__}, "
                    f"expected a {kind.__name__}"
                )
            setattr(self, attr, component)

    def run(self, runtime: WorkflowRuntime) -> None:
        model = self.persistor.load_model(runtime.context)
        runtime.fire(EventType.INITIAL_MODEL_LOADED)
        first = runtime.saved_next_round()
        if first is not None:
            log.info("resuming run %d at round %d", runtime.context.run_number, first)
        first = self.start_round if first is None else first
        progress = runtime.progress
        progress.num_rounds, progress.start_round, progress.phase = self.num_rounds, first, "training"
        runtime.fire(EventType.TRAINING_STARTED, num_rounds=self.num_rounds, start_round=first)
        for current in range(first, self.num_rounds):
            if runtime.abort_signal.triggered:
                break
            progress.current_round = current
            progress.rounds_done = current
            model = self._run_round(runtime, current, model)
            if not runtime.abort_signal.triggered:
                progress.rounds_done = current + 1
        if runtime.abort_signal.triggered:
            progress.phase = "aborted"
            runtime.fire(EventType.RUN_ABORTED, progress.current_round, reason=runtime.abort_signal.reason)
            return
        progress.phase = "finished"
        runtime.fire(EventType.TRAINING_FINISHED, progress.current_round, num_rounds=self.num_rounds)

    def _run_round(self, runtime: WorkflowRuntime, current: int, model: ModelLearnable) -> ModelLearnable:
        targets = self._wait_for_clients(runtime)
        if not targets:
            return model
        round_started = time.monotonic()
        runtime.fire(EventType.ROUND_STARTED, current, num_rounds=self.num_rounds, targets=targets)
        # The task id is the same if a restarted server redoes this round, so results of the first attempt that
        # are still queued count (once) for the second.
        task_id = f"run{runtime.context.run_number}-{self.train_task_name}-round{current}"
        state = RoundState(round=current, task_id=task_id, targets=frozenset(targets), model=model)
        runtime.channel.send(self._make_task(model, state), sorted(targets), round=current)
        runtime.progress.phase = "gathering"
        self._gather(runtime, state)
        if runtime.abort_signal.triggered:
            return model
        if state.accepted == 0:
            log.warning("round %d: no result was accepted; the global model is unchanged", current)
        else:
            model = self._update_model(runtime, current, model)
        runtime.fire(
            EventType.ROUND_DONE,
            current,
            accepted=state.accepted,
            targets=len(targets),
            seconds=round(time.monotonic() - round_started, 4),
        )
        return model

    def _make_task(self, model: ModelLearnable, state: RoundState) -> Shareable:
        task = self.generator.learnable_to_shareable(model)
        task.task_name = self.train_task_name
        task.task_id = state.task_id
        task.set_header(Header.CURRENT_ROUND, state.round)
        task.set_header(Header.NUM_ROUNDS, self.num_rounds)
        task.cookie_jar[Header.CONTRIBUTION_ROUND] = state.round
        return task

    def _wait_for_clients(self, runtime: WorkflowRuntime) -> list[str]:
        """The live sites, once at least min_clients of them are there (or [] when aborted)."""
        runtime.progress.phase = "waiting for clients"
        last_log = 0.0
        while not runtime.abort_signal.triggered:
            clients = runtime.live_clients()
            if len(clients) >= self.min_clients:
                return clients
            if time.monotonic() - last_log > CLIENT_WAIT_LOG_INTERVAL:
                log.info("waiting for clients: %d of min_clients=%d are ready", len(clients), self.min_clients)
                last_log = time.monotonic()
            runtime.abort_signal.wait(0.05)
        return []

    def _gather(self, runtime: WorkflowRuntime, state: RoundState) -> None:
        while state.answered != state.targets and not runtime.abort_signal.triggered:
            wait = self._time_left(state)
            if wait is not None and wait <= 0:
                break
            result = runtime.channel.receive(min(wait if wait is not None else 0.5, 0.5))
            if result is not None:
                try:
                    self._take(runtime, state, result)
                except BaseException:
                    result.refuse("the workflow failed while handling this result")  # never left unsettled
                    raise
                del result  # a model-sized result must not stay alive while waiting for the next one

    def _time_left(self, state: RoundState) -> float | None:
        """Seconds until the round must end (None: no deadline yet)."""
        now = time.monotonic()
        deadlines = []
        if self.train_timeout > 0:
            deadlines.append(state.started + self.train_timeout)
        if state.min_reached_at is not None:
            deadlines.append(state.min_reached_at + self.wait_time_after_min_received)
        return min(deadlines) - now if deadlines else None

    def _take(self, runtime: WorkflowRuntime, state: RoundState, result: TaskResult) -> None:
        reason = self._why_refused(state, result)
        if reason is None:
            runtime.fire(EventType.BEFORE_CONTRIBUTION_ACCEPT, state.round, site=result.site)
            state.answered.add(result.site)
            assert result.shareable.dxo is not None  # checked by _why_refused
            reason = self.aggregator.accept(result.site, result.shareable.dxo)
            runtime.fire(EventType.AFTER_CONTRIBUTION_ACCEPT, state.round, site=result.site, accepted=reason is None)
        if reason is not None:
            log.warning("round %d: refused result from %s: %s", state.round, result.site, reason)
            result.refuse(reason)
            return
        result.accept()
        state.accepted += 1
        log.info(
            "round %d: accepted result from %s (%d/%d)",
            state.round,
            result.site,
            state.accepted,
            len(state.targets),
        )
        if state.accepted >= self.min_clients and state.min_reached_at is None:
            state.min_reached_at = time.monotonic()

    def _why_refused(self, state: RoundState, result: TaskResult) -> str | None:
        """The reason a result cannot be aggregated in this round, or None."""
        contribution_round = result.shareable.cookie_jar.get(Header.CONTRIBUTION_ROUND, result.round)
        if contribution_round != state.round:
            return f"result is for round {contribution_round}, the current round is {state.round} (late or stray)"
        if result.task_id != state.task_id:
            return f"result is for task {result.task_id!r}, not the current task of round {state.round}"
        if result.site not in state.targets:
            return f"{result.site} was not sent this task"
        if result.site in state.answered:
            return f"second result from {result.site} for round {state.round}"
        if result.shareable.return_code != ReturnCode.OK:
            if not self.ignore_result_error:
                runtime_reason = f"return code {result.shareable.return_code.value}"
                raise RuntimeError(f"{result.site} failed the task: {runtime_reason}")
            state.answered.add(result.site)
            return f"return code {result.shareable.return_code.value}"
        if result.shareable.dxo is None:
            state.answered.add(result.site)
            return "result carries no DXO"
        dxo = result.shareable.dxo
        if dxo.data_kind not in (DataKind.WEIGHTS, DataKind.WEIGHT_DIFF):
            return None  # the aggregator judges other kinds
        problem = check_against_model(dxo.data, state.model, allow_non_finite=self.allow_non_finite)
        if problem:
            state.answered.add(result.site)
        return problem

    def _update_model(self, runtime: WorkflowRuntime, current: int, model: ModelLearnable) -> ModelLearnable:
        runtime.progress.phase = "aggregating"
        runtime.fire(EventType.BEFORE_AGGREGATION, current)
        started = time.monotonic()
        aggregated = self.aggregator.aggregate()
        runtime.fire(EventType.AFTER_AGGREGATION, current, seconds=round(time.monotonic() - started, 4))
        runtime.fire(EventType.BEFORE_MODEL_UPDATE, current)
        model = self.generator.shareable_to_learnable(aggregated.to_shareable(), model)
        runtime.fire(EventType.AFTER_MODEL_UPDATE, current)
        runtime.fire(EventType.BEFORE_SAVE, current)
        self.persistor.save_model(model, runtime.context)
        runtime.save_next_round(current + 1)
        runtime.fire(EventType.AFTER_SAVE, current)
        return model
