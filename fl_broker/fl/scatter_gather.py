"""FLARE's Scatter-and-Gather workflow: broadcast the global model, gather results, aggregate, save."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, ClassVar

from fl_broker.errors import AggregationError, WorkflowFailed
from fl_broker.fl.aggregation import Aggregator
from fl_broker.fl.checkpoint import component_state, restore_state
from fl_broker.fl.events import EventType
from fl_broker.fl.model import ModelLearnable, ShareableGenerator
from fl_broker.fl.persistor import ModelPersistor
from fl_broker.fl.round import Refusal, RefusalKind, RoundState, check_against_model, check_result, stamp_task
from fl_broker.fl.workflow import (
    PERSISTOR_ARG,
    SHAREABLE_GENERATOR_ARG,
    ComponentArg,
    TaskResult,
    Workflow,
    WorkflowRuntime,
    check_at_least,
)
from fl_broker.wire.messages import Shareable

log = logging.getLogger(__name__)

CLIENT_WAIT_LOG_INTERVAL = 10.0


class ScatterAndGather(Workflow):
    """Rounds `start_round` .. `num_rounds - 1` of train-and-average, with FLARE's arguments.

    A round ends when every target answered; otherwise `wait_time_after_min_received` seconds after
    `min_clients` results were accepted, or at `train_timeout` (0 = no limit) with what arrived.

    The aggregator, persistor and shareable generator are passed in; in a config they are named by id
    (`aggregator_id`, `persistor_id`, `shareable_generator_id`, FLARE's keys) and the loader passes them.
    """

    # FLARE 2.0 runs num_rounds rounds from start_round on (its flavour sets this); fl-broker's rounds end
    # before round num_rounds.
    counts_rounds_from_start: ClassVar[bool] = False
    # The next round's task goes out as soon as a round's aggregate is checked, before the round is committed
    # (see _send_ahead); FLARE's flavour keeps FLARE's order, round_started before the round's task.
    sends_next_task_early: ClassVar[bool] = True

    component_args: ClassVar[tuple[ComponentArg, ...]] = (
        ComponentArg("aggregator_id", "aggregator", Aggregator, "aggregator"),
        PERSISTOR_ARG,
        SHAREABLE_GENERATOR_ARG,
    )

    def __init__(
        self,
        *,
        aggregator: Aggregator,
        persistor: ModelPersistor,
        shareable_generator: ShareableGenerator,
        min_clients: int = 1,
        num_rounds: int = 5,
        start_round: int = 0,
        wait_time_after_min_received: float = 10,
        train_task_name: str = "train",
        train_timeout: float = 0,
        ignore_result_error: bool = True,
        allow_non_finite: bool = False,
    ) -> None:
        if self.counts_rounds_from_start and start_round >= 0:
            num_rounds += start_round
        check_at_least(1, min_clients=min_clients)
        check_at_least(0, num_rounds=num_rounds)
        if not 0 <= start_round <= num_rounds:
            raise ValueError(f"start_round must be between 0 and num_rounds ({num_rounds}), got {start_round}")
        check_at_least(0, wait_time_after_min_received=wait_time_after_min_received, train_timeout=train_timeout)
        self.min_clients = min_clients
        self.num_rounds = num_rounds
        self.start_round = start_round
        self.wait_time_after_min_received = float(wait_time_after_min_received)
        self.train_task_name = train_task_name
        self.train_timeout = float(train_timeout)
        self.ignore_result_error = ignore_result_error
        self.allow_non_finite = allow_non_finite
        self.aggregator = aggregator
        self.persistor = persistor
        self.generator = shareable_generator
        self._ahead: tuple[RoundState, list[str]] | None = None  # a round whose task went out early, its targets

    def run(self, runtime: WorkflowRuntime) -> None:
        self._ahead = None
        model, first, counted = self._starting_point(runtime)
        runtime.fire(EventType.INITIAL_MODEL_LOADED)
        runtime.fire(EventType.TRAINING_STARTED, num_rounds=self.num_rounds, start_round=first)
        last: int | None = None  # the last round begun
        empty: list[str] = []  # the summaries of rounds that accepted no result (never their models)
        for current in range(first, self.num_rounds):
            if runtime.abort_signal.triggered:
                break
            last = current
            model, nothing_accepted = self._run_round(runtime, current, model)
            counted = counted or nothing_accepted is None
            empty += [nothing_accepted] if nothing_accepted else []
        if runtime.abort_signal.triggered:
            runtime.fire(EventType.RUN_ABORTED, last, reason=runtime.abort_signal.reason)
            return
        if empty and not counted:  # rounds ran and none counted a single result: no model came of the run
            more = f" (and {len(empty) - 1} more rounds like it)" if len(empty) > 1 else ""
            raise WorkflowFailed(f"{empty[0]}{more}")
        runtime.fire(EventType.TRAINING_FINISHED, last, num_rounds=self.num_rounds)

    def _starting_point(self, runtime: WorkflowRuntime) -> tuple[ModelLearnable, int, bool]:
        """The model and round to start from (the run's last commit, else the persistor's initial model), and
        whether a round of the run was committed already."""
        checkpoint = runtime.checkpoint()
        first = self.start_round if checkpoint is None else checkpoint.next_round
        # The start round is decided before the persistor is asked for a model (FLARE's persistors read their
        # saved model only when the context's start round is > 0); every later call sees it too.
        runtime.context = replace(runtime.context, start_round=first)
        initial = self._initial_model(runtime)
        if checkpoint is None:
            if not initial:
                raise WorkflowFailed(f"the persistor ({type(self.persistor).__name__}) gave no initial model weights")
            return initial, first, False
        log.info("resuming run %d at round %d", runtime.context.run_number, checkpoint.next_round)
        restore_state(self._components(), checkpoint)  # e.g. a server optimizer's moments, as committed
        # The committed model wins over what the persistor read. A kill may have come between the commit and the
        # persistor's save: save again, so the persistor's files (models/server.npy) show the committed model.
        self.persistor.save_model(checkpoint.model, runtime.context)
        return checkpoint.model, first, True

    def _initial_model(self, runtime: WorkflowRuntime) -> ModelLearnable:
        """The model the persistor starts from (FLARE's flavour also looks at the context's GLOBAL_MODEL)."""
        return self.persistor.load_model(runtime.context)

    def _run_round(
        self, runtime: WorkflowRuntime, current: int, model: ModelLearnable
    ) -> tuple[ModelLearnable, str | None]:
        """The model after round `current`, and the round's summary if it accepted no result (the state itself
        is not returned: it holds the round's model)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0].round == current:
            state, targets = ahead  # its task is out already (sent while the last round was committed)
            round_started = state.started
            runtime.fire(EventType.ROUND_STARTED, current, num_rounds=self.num_rounds, targets=targets)
        else:
            targets = self._wait_for_clients(runtime)
            if not targets:
                return model, None  # aborted while waiting
            round_started = time.monotonic()
            runtime.fire(EventType.ROUND_STARTED, current, num_rounds=self.num_rounds, targets=targets)
            state = self._send_task(runtime, current, targets, model)
        self._gather(runtime, state)
        if runtime.abort_signal.triggered:
            return model, None
        model, details = self._close_round(runtime, state, model)
        runtime.fire(
            EventType.ROUND_DONE,
            current,
            accepted=state.accepted,
            targets=len(targets),
            seconds=round(time.monotonic() - round_started, 4),
            **details,
        )
        return model, None if state.accepted else state.summary()

    def _close_round(
        self, runtime: WorkflowRuntime, state: RoundState, model: ModelLearnable
    ) -> tuple[ModelLearnable, dict[str, Any]]:
        """The model the round ends with, and what its round_done event says of the sites' metrics (their
        weighted mean and each site's), a shortfall or a failure."""
        details: dict[str, Any] = (
            {"metrics": state.metrics_summary(), "site_metrics": state.metrics} if state.metrics else {}
        )
        if state.accepted < self.min_clients:
            details["below_min_clients"] = f"{state.summary()} (min_clients={self.min_clients})"
            log.warning("%s", details["below_min_clients"])
        if state.accepted == 0:
            log.warning("round %d: no result was accepted; the global model is unchanged", state.round)
            return model, details
        outcome = self._update_model(runtime, state.round, model)
        if isinstance(outcome, str):
            details["failed"] = outcome
            log.error("round %d failed: %s; the global model is unchanged", state.round, outcome)
            return model, details
        return outcome, details

    def _components(self) -> dict[str, object]:
        """The collaborators by role: the stateful ones have their state committed with every round."""
        return {"aggregator": self.aggregator, "shareable_generator": self.generator}

    def _send_task(
        self, runtime: WorkflowRuntime, current: int, targets: list[str], model: ModelLearnable
    ) -> RoundState:
        """Send round `current`'s task with `model` to `targets`; the round's state."""
        # The task id is the same if a restarted server redoes this round, so results of the first attempt that
        # are still queued count (once) for the second.
        task_id = f"run{runtime.context.run_number}-{self.train_task_name}-round{current}"
        state = RoundState(round=current, task_id=task_id, targets=frozenset(targets), model=model)
        runtime.channel.send(self._make_task(model, state), sorted(targets), round=current)
        return state

    def _send_ahead(self, runtime: WorkflowRuntime, following: int, model: ModelLearnable) -> None:
        """Send the task of round `following` with the new global `model` now, before this round's commit and
        round_done, when that round will run (not the last, no abort) and enough sites are there already;
        else that round begins as usual, waiting for its clients.

        The sites then train while the server commits the round and saves the model (on a 3x3 model with two
        sites the commit, the save and the events in between took a quarter of the round). It is safe: the
        task is made from the model the commit holds, and no result of the next round is taken before the
        commit is done, since results are taken only by the next round's gather. A server killed before the
        commit resumes at this round and runs it again from the model committed before it, refusing the
        next round's results that come in meanwhile as being for another round; killed after it, it sends
        the next round's task again under the same task id, and a site's second answer counts once."""
        if not self.sends_next_task_early or following >= self.num_rounds or runtime.abort_signal.triggered:
            return
        targets = runtime.live_clients()
        if len(targets) >= self.min_clients:
            self._ahead = self._send_task(runtime, following, targets, model), targets

    def _make_task(self, model: ModelLearnable, state: RoundState) -> Shareable:
        task = self.generator.learnable_to_shareable(model)
        return stamp_task(
            task, name=self.train_task_name, task_id=state.task_id, round=state.round, num_rounds=self.num_rounds
        )

    def _wait_for_clients(self, runtime: WorkflowRuntime) -> list[str]:
        """The live sites, once at least min_clients of them are there (or [] when aborted)."""
        last_log = 0.0
        while not runtime.abort_signal.triggered:
            clients = runtime.live_clients()
            if len(clients) >= self.min_clients:
                return clients
            if time.monotonic() - last_log > CLIENT_WAIT_LOG_INTERVAL:
                log.info(  # registered is not enough: a site takes part once its client app is started
                    "waiting for clients: %d of min_clients=%d have started their client app for run %d (%s)",
                    len(clients),
                    self.min_clients,
                    runtime.context.run_number,
                    ", ".join(clients) or "none yet",
                )
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
        refusal = check_result(state, result, allow_non_finite=self.allow_non_finite)
        if refusal is not None and refusal.kind is RefusalKind.TASK_FAILED and not self.ignore_result_error:
            raise RuntimeError(f"{result.site} failed the task: {refusal.detail}")
        if refusal is None:
            refusal = self._contribute(runtime, state, result)
        state.record(result.site, refusal)
        if refusal is not None:
            log.warning("round %d: refused result from %s: %s", state.round, result.site, refusal.detail)
            result.refuse(refusal.detail)
            return
        result.accept()
        log.info(
            "round %d: accepted result from %s (%d/%d)",
            state.round,
            result.site,
            state.accepted,
            len(state.targets),
        )
        if state.accepted >= self.min_clients and state.min_reached_at is None:
            state.min_reached_at = time.monotonic()

    def _contribute(self, runtime: WorkflowRuntime, state: RoundState, result: TaskResult) -> Refusal | None:
        """Hand a checked result to the aggregator; its refusal, if any."""
        assert result.shareable.dxo is not None  # check_result refuses a result without one
        runtime.fire(EventType.BEFORE_CONTRIBUTION_ACCEPT, state.round, site=result.site)
        reason = self.aggregator.accept(result.site, result.shareable.dxo)
        metrics = state.add_metrics(result.site, result.shareable.dxo) if reason is None else {}
        runtime.fire(
            EventType.AFTER_CONTRIBUTION_ACCEPT,
            state.round,
            site=result.site,
            accepted=reason is None,
            **({"metrics": metrics, "metrics_weight": state.metric_weights[result.site]} if metrics else {}),
        )
        return None if reason is None else Refusal(RefusalKind.AGGREGATOR, reason)

    def _update_model(self, runtime: WorkflowRuntime, current: int, model: ModelLearnable) -> str | ModelLearnable:
        """The new global model, aggregated, checked and saved; or why the round failed (model unchanged)."""
        runtime.fire(EventType.BEFORE_AGGREGATION, current)
        started = time.monotonic()
        try:
            aggregated = self.aggregator.aggregate()
        except AggregationError as exc:
            return f"aggregation failed: {exc}"
        runtime.fire(EventType.AFTER_AGGREGATION, current, seconds=round(time.monotonic() - started, 4))
        runtime.fire(EventType.BEFORE_MODEL_UPDATE, current)
        try:
            updated = self.generator.shareable_to_learnable(aggregated.to_shareable(), model)
        except ValueError as exc:  # e.g. a server optimizer whose step would leave the model non-finite
            return f"the model update failed: {exc}"
        # The aggregate must fit the model it replaces, whatever the aggregator and generator did.
        problem = check_against_model(updated, model, allow_non_finite=self.allow_non_finite)
        if problem:
            return f"the aggregate does not fit the global model: {problem}"
        runtime.fire(EventType.AFTER_MODEL_UPDATE, current)
        self._send_ahead(runtime, current + 1, updated)
        runtime.fire(EventType.BEFORE_SAVE, current)
        # The model, the round after it and the components' state, in one atomic write.
        runtime.commit(current + 1, updated, component_state(self._components()))
        self.persistor.save_model(updated, runtime.context)  # the persistor's copy follows the commit
        runtime.fire(EventType.AFTER_SAVE, current)
        return updated
