"""FLARE's cyclic weight transfer (CyclicController): the model visits the sites one after the other; each
trains it and hands it on, and `num_rounds` such cycles make the run.

Every hop is committed (the model after it, the hop to run next, the visiting order, the counts so far), so a
restarted server resumes at the very hop it stopped at: the task it sends again has the same id, and a
result the site sent to the old server still counts (it was computed from the committed model). A site that
fails its hop (an error return code, no or a wrong DXO, weights that do not fit, no result within
`task_result_timeout`, not live for `task_assignment_timeout` seconds) is skipped: logged with the reason,
and the model goes on unchanged to the next site. A run in which no hop was accepted fails.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from fl_broker.errors import WorkflowFailed
from fl_broker.fl.checkpoint import component_state, restore_state
from fl_broker.fl.events import EventType
from fl_broker.fl.metrics import accepted_metrics
from fl_broker.fl.model import ModelLearnable, ShareableGenerator
from fl_broker.fl.persistor import ModelPersistor
from fl_broker.fl.round import RoundState, check_against_model, check_result, stamp_task
from fl_broker.fl.workflow import (
    PERSISTOR_ARG,
    SHAREABLE_GENERATOR_ARG,
    TaskResult,
    Workflow,
    WorkflowRuntime,
    check_at_least,
)
from fl_broker.wire.messages import Shareable

log = logging.getLogger(__name__)

ORDERS = ("FIXED", "RANDOM", "RANDOM_WITHOUT_SAME_IN_A_ROW")  # FLARE's RelayOrder values
STATE_KEY = "cyclic"  # the controller's own part of the checkpoint's state


@dataclass
class Relay:
    """Where the relay is, as committed with every hop: the sites taking part, this cycle's order, and what
    became of the hops so far."""

    sites: list[str]
    order: list[str] = field(default_factory=list)  # this cycle's visiting order
    accepted_total: int = 0  # hops accepted in the whole run
    accepted: int = 0  # in this cycle
    skipped: dict[str, str] = field(default_factory=dict)  # this cycle: site -> why its hop was skipped
    first_empty: str = ""  # the summary of the first cycle that accepted nothing (the failure's reason)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Relay:
        """The relay a checkpoint committed; ValueError if it is not one."""
        try:
            relay = cls(**state)
        except TypeError as exc:
            raise ValueError(f"not a cyclic relay state: {exc}") from exc
        if not relay.sites or not all(isinstance(s, str) for s in relay.sites + relay.order):
            raise ValueError("a cyclic relay state needs its sites")
        return relay

    def summary(self, cycle: int) -> str:
        """One line for people, e.g. "round 0: 2 of 3 sites' results accepted: site-2 return code ERROR"."""
        line = f"round {cycle}: {self.accepted} of {len(self.order)} sites' results accepted"
        skipped = "; ".join(f"{site} {why}" for site, why in self.skipped.items())
        return f"{line}: {skipped}" if skipped else line


class CyclicController(Workflow):
    """Cyclic weight transfer with FLARE's arguments: `num_rounds` (5) cycles over the sites in `order`
    ("FIXED", "RANDOM" or "RANDOM_WITHOUT_SAME_IN_A_ROW"), task `task_name` ("train"),
    `task_assignment_timeout` (10 s: how long the site whose turn it is may be gone before it is skipped),
    `persist_every_n_rounds` (1; 0: only at the end), `task_check_period` (0.5 s between checks), the
    components `persistor_id` and `shareable_generator_id`; and fl-broker's `participating_clients` (the
    sites, in this order for FIXED; default: the live sites, sorted, once `min_clients` (2) are there),
    `task_result_timeout` (0: none) and `allow_non_finite` (false)."""

    component_args = (PERSISTOR_ARG, SHAREABLE_GENERATOR_ARG)

    def __init__(
        self,
        *,
        persistor: ModelPersistor,
        shareable_generator: ShareableGenerator,
        num_rounds: int = 5,
        task_assignment_timeout: float = 10,
        task_name: str = "train",
        task_check_period: float = 0.5,
        persist_every_n_rounds: int = 1,
        order: str = "FIXED",
        participating_clients: list[str] | None = None,
        min_clients: int = 2,
        task_result_timeout: float = 0,
        allow_non_finite: bool = False,
    ) -> None:
        self._check(order, participating_clients)
        check_at_least(1, min_clients=min_clients)
        check_at_least(
            0,
            num_rounds=num_rounds,
            persist_every_n_rounds=persist_every_n_rounds,
            task_assignment_timeout=task_assignment_timeout,
            task_result_timeout=task_result_timeout,
        )
        if not task_check_period > 0:
            raise ValueError(f"task_check_period must be > 0, got {task_check_period}")
        self.persistor, self.generator = persistor, shareable_generator
        self.num_rounds, self.min_clients, self.order = num_rounds, min_clients, order
        self.task_name, self.persist_every_n_rounds = task_name, persist_every_n_rounds
        self.task_assignment_timeout, self.task_result_timeout = (
            float(task_assignment_timeout),
            float(task_result_timeout),
        )
        self.task_check_period = float(task_check_period)
        self.participating_clients = list(participating_clients or [])
        self.allow_non_finite = allow_non_finite

    @staticmethod
    def _check(order: str, sites: list[str] | None) -> None:
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        if sites is not None and len(set(sites)) != len(sites):
            raise ValueError(f"participating_clients names a site more than once: {sites}")

    def run(self, runtime: WorkflowRuntime) -> None:
        start = self._starting_point(runtime)
        if start is None:
            runtime.fire(EventType.RUN_ABORTED, reason=runtime.abort_signal.reason)
            return
        model, hop, relay = start
        n = len(relay.sites)
        runtime.fire(EventType.INITIAL_MODEL_LOADED)
        runtime.fire(EventType.TRAINING_STARTED, num_rounds=self.num_rounds, start_round=hop // n)
        cycle_started, resumed_inside_a_cycle = time.monotonic(), hop % n != 0
        while hop < self.num_rounds * n and not runtime.abort_signal.triggered:
            cycle, position = divmod(hop, n)
            if position == 0 or resumed_inside_a_cycle:
                self._begin_cycle(runtime, cycle, relay, new_order=position == 0)
                cycle_started, resumed_inside_a_cycle = time.monotonic(), False
            model = self._hop(runtime, cycle, position, model, relay)
            hop += 1
            if hop % n == 0 and not runtime.abort_signal.triggered:
                self._end_cycle(runtime, cycle, model, relay, time.monotonic() - cycle_started)
        self._finish(runtime, model, relay)

    # ---- starting, cycles, finishing ----

    def _starting_point(self, runtime: WorkflowRuntime) -> tuple[ModelLearnable, int, Relay] | None:
        """The model, the hop to run next and the relay: the run's last commit, or the persistor's model and the
        live sites (None if aborted while waiting for them)."""
        checkpoint = runtime.checkpoint()
        if checkpoint is None:
            sites = self._wait_for_sites(runtime)
            return None if sites is None else (self.persistor.load_model(runtime.context), 0, Relay(sites=sites))
        relay = Relay.from_state(checkpoint.state.get(STATE_KEY, {}))
        restore_state({"shareable_generator": self.generator}, checkpoint)
        log.info(
            "resuming run %d at hop %d (round %d) of %s",
            runtime.context.run_number,
            checkpoint.next_round,
            checkpoint.next_round // len(relay.sites),
            ", ".join(relay.sites),
        )
        if checkpoint.next_round % len(relay.sites) == 0:  # a kill may have come before a cycle's save
            self.persistor.save_model(checkpoint.model, runtime.context)
        return checkpoint.model, checkpoint.next_round, relay

    def _wait_for_sites(self, runtime: WorkflowRuntime) -> list[str] | None:
        """The sites taking part, once live: all of `participating_clients`, else at least `min_clients`."""
        while not runtime.abort_signal.triggered:
            live = runtime.live_clients()
            if self.participating_clients and set(self.participating_clients) <= set(live):
                return list(self.participating_clients)
            if not self.participating_clients and len(live) >= self.min_clients:
                return sorted(live)
            runtime.abort_signal.wait(0.05)
        return None

    def _begin_cycle(self, runtime: WorkflowRuntime, cycle: int, relay: Relay, *, new_order: bool) -> None:
        """Fire the cycle's round_started; a new cycle (not one resumed half way) draws its order first."""
        if new_order:
            last = relay.order[-1] if relay.order else None
            relay.order = self._visiting_order(relay.sites, last)
            relay.accepted, relay.skipped = 0, {}
        log.info("round %d: the model visits %s", cycle, " -> ".join(relay.order))
        runtime.fire(EventType.ROUND_STARTED, cycle, num_rounds=self.num_rounds, targets=list(relay.order))

    def _visiting_order(self, sites: list[str], last: str | None) -> list[str]:
        order = list(sites)
        if self.order != "FIXED":
            random.shuffle(order)
        if self.order == "RANDOM_WITHOUT_SAME_IN_A_ROW" and len(order) > 1 and order[0] == last:
            order.append(order.pop(0))  # the site that ended the last cycle does not start this one
        return order

    def _end_cycle(
        self, runtime: WorkflowRuntime, cycle: int, model: ModelLearnable, relay: Relay, seconds: float
    ) -> None:
        if relay.accepted == 0:
            relay.first_empty = relay.first_empty or relay.summary(cycle)
            log.warning("%s; the model is unchanged", relay.summary(cycle))
        if self.persist_every_n_rounds and (cycle + 1) % self.persist_every_n_rounds == 0:
            self._save(runtime, cycle, model)
        details = {"skipped": relay.summary(cycle)} if relay.skipped else {}
        runtime.fire(
            EventType.ROUND_DONE,
            cycle,
            accepted=relay.accepted,
            targets=len(relay.order),
            seconds=round(seconds, 4),
            **details,
        )

    def _save(self, runtime: WorkflowRuntime, cycle: int | None, model: ModelLearnable) -> None:
        runtime.fire(EventType.BEFORE_SAVE, cycle)
        self.persistor.save_model(model, runtime.context)
        runtime.fire(EventType.AFTER_SAVE, cycle)

    def _finish(self, runtime: WorkflowRuntime, model: ModelLearnable, relay: Relay) -> None:
        last_cycle = self.num_rounds - 1 if self.num_rounds else None
        if runtime.abort_signal.triggered:
            runtime.fire(EventType.RUN_ABORTED, reason=runtime.abort_signal.reason)
            return
        if self.num_rounds and relay.accepted_total == 0:
            raise WorkflowFailed(relay.first_empty or "no site's result was accepted")
        every = self.persist_every_n_rounds
        if not (every and self.num_rounds and self.num_rounds % every == 0):  # else the last cycle saved it
            self._save(runtime, last_cycle, model)  # FLARE saves when the controller stops, whatever the cadence
        runtime.fire(EventType.TRAINING_FINISHED, last_cycle, num_rounds=self.num_rounds)

    # ---- one hop ----

    def _hop(
        self, runtime: WorkflowRuntime, cycle: int, position: int, model: ModelLearnable, relay: Relay
    ) -> ModelLearnable:
        """Send the model to the site at `position` and take its result: the model after the hop, committed
        (unchanged if the site was skipped); on an abort, the model as it was, uncommitted."""
        site = relay.order[position]
        # The same id when a restarted server sends this hop again, so the first attempt's result still counts.
        workflow = runtime.workflow_id or "cyclic"
        task_id = f"run{runtime.context.run_number}-{workflow}-{self.task_name}-round{cycle}-hop{position}"
        state = RoundState(round=cycle, task_id=task_id, targets=frozenset([site]), model=model)
        runtime.channel.send(self._make_task(model, state), [site], round=cycle)
        result, reason = self._wait_for_result(runtime, state, site)
        if result is None and reason is None:  # aborted
            return model
        updated = model
        if result is not None and reason is None:
            outcome = self._apply(runtime, cycle, site, result, model)
            updated, reason = (model, outcome) if isinstance(outcome, str) else (outcome, None)
        if reason is None:
            relay.accepted += 1
            relay.accepted_total += 1
            log.info("round %d: accepted the model from %s (%d/%d)", cycle, site, position + 1, len(relay.order))
        else:
            relay.skipped[site] = reason
            log.warning("round %d: skipped %s: %s; the model goes on unchanged", cycle, site, reason)
        self._commit(runtime, cycle * len(relay.sites) + position + 1, updated, relay)
        # Settled after the commit: a kill in between redelivers the result, and it is refused as stale.
        if result is not None and reason is None:
            result.accept()
        elif result is not None:
            result.refuse(reason or "")
        return updated

    def _make_task(self, model: ModelLearnable, state: RoundState) -> Shareable:
        task = self.generator.learnable_to_shareable(model)
        return stamp_task(
            task, name=self.task_name, task_id=state.task_id, round=state.round, num_rounds=self.num_rounds
        )

    def _commit(self, runtime: WorkflowRuntime, next_hop: int, model: ModelLearnable, relay: Relay) -> None:
        state = component_state({"shareable_generator": self.generator})
        state[STATE_KEY] = asdict(relay)
        runtime.commit(next_hop, model, state)

    def _apply(
        self, runtime: WorkflowRuntime, cycle: int, site: str, result: TaskResult, model: ModelLearnable
    ) -> ModelLearnable | str:
        """The model the site's result makes, or why it cannot be used."""
        runtime.fire(EventType.BEFORE_CONTRIBUTION_ACCEPT, cycle, site=site)
        try:
            updated = self.generator.shareable_to_learnable(result.shareable, model)
        except ValueError as exc:
            outcome: ModelLearnable | str = f"its result cannot update the model: {exc}"
        else:
            problem = check_against_model(updated, model, allow_non_finite=self.allow_non_finite)
            outcome = f"its model does not fit the global model: {problem}" if problem else updated
        accepted = not isinstance(outcome, str)
        metrics = accepted_metrics(result.shareable.dxo) if accepted else {}  # each hop's, recorded by the server
        runtime.fire(EventType.AFTER_CONTRIBUTION_ACCEPT, cycle, site=site, accepted=accepted, **metrics)
        return outcome

    def _wait_for_result(
        self, runtime: WorkflowRuntime, state: RoundState, site: str
    ) -> tuple[TaskResult | None, str | None]:
        """The site's answer to this hop and why it is refused (None if it is not); (None, reason) when the
        site is skipped without one; (None, None) on an abort. Stray and stale results are refused as they come."""
        gone_since: float | None = None
        while not runtime.abort_signal.triggered:
            now = time.monotonic()
            if self.task_result_timeout and now - state.started >= self.task_result_timeout:
                return None, f"sent no result within task_result_timeout={self.task_result_timeout:g} s"
            gone_since = None if site in runtime.live_clients() else (gone_since or now)
            if gone_since is not None and now - gone_since >= self.task_assignment_timeout:
                return None, f"was not live for task_assignment_timeout={self.task_assignment_timeout:g} s"
            result = runtime.channel.receive(self.task_check_period)
            if result is None:
                continue
            refusal = check_result(state, result, allow_non_finite=self.allow_non_finite)
            if refusal is not None and not refusal.kind.is_answer:
                log.warning("round %d: refused a result from %s: %s", state.round, result.site, refusal.detail)
                result.refuse(refusal.detail)
                continue
            return result, None if refusal is None else refusal.detail
        return None, None
