"""Scatter-and-Gather with secure aggregation: each round the sites agree pairwise masks through the server
(protocol.py has the four phases), send only masked updates, and the server removes what does not cancel;
it learns the round's weighted mean and nothing about any one site's update."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import ClassVar, TypeVar

from fl_broker.errors import SecAggError
from fl_broker.fl.aggregation import DEFAULT_MAX_NUM_STEPS
from fl_broker.fl.events import EventType
from fl_broker.fl.model import ModelLearnable, ShareableGenerator
from fl_broker.fl.persistor import ModelPersistor
from fl_broker.fl.round import Refusal, RefusalKind, RoundState, check_result, stamp_task
from fl_broker.fl.scatter_gather import ScatterAndGather
from fl_broker.fl.workflow import PERSISTOR_ARG, SHAREABLE_GENERATOR_ARG, ComponentArg, TaskResult, WorkflowRuntime
from fl_broker.secagg import crypto, protocol, ring
from fl_broker.secagg.coordinator import KeyRound, Reveal
from fl_broker.secagg.masked_sum import MaskedSum
from fl_broker.wire.messages import DXO, DataKind, Shareable

log = logging.getLogger(__name__)

T = TypeVar("T")


class SecureScatterAndGather(ScatterAndGather):
    """ScatterAndGather's arguments and round rules (the train phase ends as its rounds do), without an
    aggregator: the server sums masked updates. Its own: `threshold` (the fewest sites whose shares rebuild
    a secret; never below a majority of the key holders, nor 2), `key_timeout` (seconds each key phase may
    take; it also ends `wait_time_after_min_received` after min_clients answered), `fraction_bits` (the
    fixed-point precision: the aggregate is exact to 2**-fraction_bits), `expected_data_kind`, `max_num_steps`."""

    sends_next_task_early = False  # a round here begins with key tasks, never with the train task

    component_args: ClassVar[tuple[ComponentArg, ...]] = (PERSISTOR_ARG, SHAREABLE_GENERATOR_ARG)

    def __init__(
        self,
        *,
        persistor: ModelPersistor,
        shareable_generator: ShareableGenerator,
        min_clients: int = 2,
        num_rounds: int = 5,
        start_round: int = 0,
        wait_time_after_min_received: float = 10,
        train_task_name: str = "train",
        train_timeout: float = 0,
        ignore_result_error: bool = True,
        threshold: int = 0,
        key_timeout: float = 60,
        fraction_bits: int = 16,
        expected_data_kind: str = "WEIGHTS",
        max_num_steps: float = DEFAULT_MAX_NUM_STEPS,
    ) -> None:
        crypto.require_cryptography()
        if min_clients < 2:
            raise ValueError(
                f"min_clients must be >= 2 for secure aggregation (one update is its own sum), got {min_clients}"
            )
        if not key_timeout > 0:
            raise ValueError(f"key_timeout must be > 0, got {key_timeout}")
        kind = DataKind(expected_data_kind)
        if kind not in (DataKind.WEIGHTS, DataKind.WEIGHT_DIFF):
            raise ValueError(f"expected_data_kind must be WEIGHTS or WEIGHT_DIFF, got {expected_data_kind!r}")
        self.fraction_bits = ring.check_fraction_bits(fraction_bits)
        self.threshold = threshold
        self.key_timeout = float(key_timeout)
        self.masked = MaskedSum(fraction_bits=fraction_bits, expected_data_kind=kind, max_num_steps=max_num_steps)
        super().__init__(
            aggregator=self.masked,
            persistor=persistor,
            shareable_generator=shareable_generator,
            min_clients=min_clients,
            num_rounds=num_rounds,
            start_round=start_round,
            wait_time_after_min_received=wait_time_after_min_received,
            train_task_name=train_task_name,
            train_timeout=train_timeout,
            ignore_result_error=ignore_result_error,
        )

    def _run_round(
        self, runtime: WorkflowRuntime, current: int, model: ModelLearnable
    ) -> tuple[ModelLearnable, str | None]:
        """The model after round `current`, and why the round counted nothing, if it did not."""
        targets = self._wait_for_clients(runtime)
        if not targets:
            return model, None  # aborted while waiting
        started = time.monotonic()
        runtime.fire(EventType.ROUND_STARTED, current, num_rounds=self.num_rounds, targets=targets)
        keys = KeyRound(runtime.context.run_number, current, self.threshold)
        try:
            state = self._masked_round(runtime, keys, model, targets)
        except SecAggError as exc:
            if runtime.abort_signal.triggered:
                return model, None
            log.error("round %d failed: %s; the global model is unchanged", current, exc)
            self._round_done(runtime, current, targets, started, 0, {"failed": str(exc)})
            return model, f"round {current}: {exc}"
        if state is None:
            return model, None  # aborted
        model, details = self._close_round(runtime, state, model)
        if keys.dropped:
            details["dropped"] = ", ".join(keys.dropped)
        self._round_done(runtime, current, targets, started, state.accepted, details)
        return model, None if state.accepted else state.summary()

    @staticmethod
    def _round_done(
        runtime: WorkflowRuntime,
        current: int,
        targets: list[str],
        started: float,
        accepted: int,
        details: dict[str, str],
    ) -> None:
        """The round's round_done event, with its length in seconds."""
        seconds = round(time.monotonic() - started, 4)
        runtime.fire(EventType.ROUND_DONE, current, accepted=accepted, targets=len(targets), seconds=seconds, **details)

    def _masked_round(
        self, runtime: WorkflowRuntime, keys: KeyRound, model: ModelLearnable, targets: list[str]
    ) -> RoundState | None:
        """The four phases; the round's state with the masks removed from the sum (None if aborted).
        SecAggError when the round cannot end with a sum: too few sites at some phase."""
        advertised = self._phase(runtime, keys, protocol.ADVERTISE_TASK, {"sites": targets}, targets, keys.parse_keys)
        keys.take_keys(advertised)
        shared = self._phase(runtime, keys, protocol.SHARE_TASK, keys.share_fields(), keys.holders, keys.parse_sealed)
        keys.take_sealed(shared)
        state = self._train_phase(runtime, keys, model)
        if runtime.abort_signal.triggered:
            return None
        survivors = sorted(self.masked.contributors)
        fields = keys.unmask_fields(survivors)
        if keys.dropped:
            log.warning("round %d: %s dropped out after the masks were agreed", keys.round, ", ".join(keys.dropped))

        def parse(site: str, dxo: DXO) -> Reveal:
            """A survivor's shares, for this round's survivors and dropped sites."""
            return keys.parse_reveal(site, dxo, survivors)

        reveals = self._phase(runtime, keys, protocol.UNMASK_TASK, fields, survivors, parse, needed=keys.threshold)
        if runtime.abort_signal.triggered:
            return None
        keys.remove_masks(self.masked.sums, reveals, survivors)
        self.masked.unmasked = True
        return state

    def _train_phase(self, runtime: WorkflowRuntime, keys: KeyRound, model: ModelLearnable) -> RoundState:
        """Phase 3: the model and the sealed shares to U2; masked updates gathered as ScatterAndGather does."""
        task_id = f"run{runtime.context.run_number}-{self.train_task_name}-round{keys.round}"
        state = RoundState(round=keys.round, task_id=task_id, targets=frozenset(keys.maskers), model=model)
        self.masked.begin(model)
        task = self._make_task(model, state)
        task.set_header(protocol.HEADER, keys.train_fields(self.fraction_bits))
        runtime.channel.send(task, keys.maskers, round=keys.round)
        self._gather(runtime, state)
        return state

    def _phase(
        self,
        runtime: WorkflowRuntime,
        keys: KeyRound,
        task_name: str,
        fields: dict[str, object],
        targets: list[str],
        parse: Callable[[str, DXO], T],
        needed: int | None = None,
    ) -> dict[str, T]:
        """Send a key task to `targets` and collect the parsed answers: until every target answered,
        `wait_time_after_min_received` after `needed` (default min_clients) did, or `key_timeout`."""
        task = self._key_task(runtime, keys.round, task_name, fields)
        state = RoundState(round=keys.round, task_id=task.task_id, targets=frozenset(targets))
        runtime.channel.send(task, targets, round=keys.round)
        answers: dict[str, T] = {}
        deadline = time.monotonic() + self.key_timeout
        while state.answered != state.targets and not runtime.abort_signal.triggered:
            end = (
                deadline
                if state.min_reached_at is None
                else min(deadline, state.min_reached_at + self.wait_time_after_min_received)
            )
            if time.monotonic() >= end:
                break
            result = runtime.channel.receive(min(end - time.monotonic(), 0.5))
            if result is not None and self._take_answer(state, result, parse, answers):
                if len(answers) >= (needed or self.min_clients) and state.min_reached_at is None:
                    state.min_reached_at = time.monotonic()
        missing = sorted(set(targets) - set(answers))
        if missing and not runtime.abort_signal.triggered:
            log.warning("round %d, %s: no usable answer from %s", keys.round, task_name, ", ".join(missing))
        return answers

    @staticmethod
    def _take_answer(
        state: RoundState, result: TaskResult, parse: Callable[[str, DXO], T], answers: dict[str, T]
    ) -> bool:
        """Check, parse and settle one answer of a key phase; whether it was accepted."""
        refusal = check_result(state, result, allow_non_finite=False)
        if refusal is None:
            assert result.shareable.dxo is not None  # check_result refuses a result without one
            try:
                answers[result.site] = parse(result.site, result.shareable.dxo)
            except SecAggError as exc:
                refusal = Refusal(RefusalKind.AGGREGATOR, str(exc))  # an answer, but a wrong one
        state.record(result.site, refusal)
        if refusal is not None:
            log.warning("round %d, %s: refused the answer of %s: %s", state.round, result.task_id, result.site, refusal)
            result.refuse(refusal.detail)
            return False
        result.accept()
        return True

    def _key_task(self, runtime: WorkflowRuntime, current: int, task_name: str, fields: dict[str, object]) -> Shareable:
        """A key phase's task: stamped as the train task is, its fields in the `secagg` header."""
        task_id = f"run{runtime.context.run_number}-{task_name}-round{current}"
        task = stamp_task(Shareable(), name=task_name, task_id=task_id, round=current, num_rounds=self.num_rounds)
        task.set_header(protocol.HEADER, fields)
        return task
