"""The site's executor for secure aggregation: it answers the key phases itself and wraps the app's own
trainer for the train task, whose result it quantizes and masks before it leaves the site. Configured in
config_fed_client.json for the train task and the three key tasks (protocol.KEY_TASKS)."""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import replace
from typing import Any

import numpy as np

from fl_broker.errors import ConfigError, SecAggError
from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.executor import Executor
from fl_broker.fl.filters import Direction, FilterChains, FilterContext, FilterError, private_copy
from fl_broker.secagg import crypto, protocol, ring
from fl_broker.secagg.session import SiteRound
from fl_broker.wire import names
from fl_broker.wire.messages import DXO, DataKind, Header, MetaKey, ReturnCode, Shareable, make_reply

log = logging.getLogger(__name__)

KEPT_ROUNDS = 2  # sessions kept per run: the current round, and the one before for a late unmask request


class SecureTrainer(Executor):
    """Runs `trainer` (an Executor, or its `{"path", "args"}` spec, built from the app's custom/ folder on
    first use) for `train_task_name`, and sends only its masked update; answers the key tasks."""

    def __init__(
        self,
        trainer: Executor | dict[str, Any],
        train_task_name: str = "train",
        result_filters: list[dict[str, Any]] | None = None,
    ) -> None:
        crypto.require_cryptography()
        if not isinstance(trainer, Executor):
            _check_spec(trainer)
        if result_filters is not None and not isinstance(result_filters, list):
            raise ConfigError(f"result_filters: expected a list of filters, got {result_filters!r}")
        self.trainer = trainer
        self.train_task_name = train_task_name
        # Filters of the plain update (DP noise, clipping ...): they must run before masking, since the
        # site's task_result_filters only ever see the masked words.
        self.result_filters = list(result_filters or [])
        self._filters: FilterChains | None = None
        self._rounds: dict[tuple[int, int], SiteRound] = {}

    def execute(self, task_name: str, shareable: Shareable, context: RunContext, abort_signal: Signal) -> Shareable:
        """Answer a key task, or train and mask; a wrong task is answered with BAD_TASK_DATA, logged why."""
        current = shareable.get_header(Header.CURRENT_ROUND)
        try:
            if not isinstance(current, int) or isinstance(current, bool):
                raise SecAggError(f"header {Header.CURRENT_ROUND!r} is {current!r}, expected the round number")
            return self._dispatch(task_name, shareable, context, abort_signal, current)
        except SecAggError as exc:
            log.error("secure aggregation, %s task of round %s: %s", task_name, current, exc)
            return make_reply(ReturnCode.BAD_TASK_DATA)

    def _dispatch(
        self, task_name: str, shareable: Shareable, context: RunContext, abort_signal: Signal, current: int
    ) -> Shareable:
        if task_name == protocol.ADVERTISE_TASK:
            return protocol.collection(self._start(context, current).advertise())
        if task_name == protocol.SHARE_TASK:
            fields = protocol.header_of(shareable, task_name)
            return protocol.collection({"sealed": self._session(context, current).share(fields)})
        if task_name == protocol.UNMASK_TASK:
            fields = protocol.header_of(shareable, task_name)
            return protocol.collection(self._session(context, current).reveal(fields))
        if task_name == self.train_task_name:
            return self._train(task_name, shareable, context, abort_signal, current)
        return make_reply(ReturnCode.TASK_UNKNOWN)

    def _start(self, context: RunContext, current: int) -> SiteRound:
        """The round's session; a new one with fresh keys unless the advertise task is redelivered."""
        key = (context.run_number, current)
        if key not in self._rounds:
            self._rounds[key] = SiteRound(site=context.site_name, run=context.run_number, round=current)
            for old in sorted(k for k in self._rounds if k[0] != key[0] or k[1] <= current - KEPT_ROUNDS):
                del self._rounds[old]  # a round's secrets are never needed once its successor is done
        return self._rounds[key]

    def _session(self, context: RunContext, current: int) -> SiteRound:
        session = self._rounds.get((context.run_number, current))
        if session is None:
            raise SecAggError(f"no keys of this site for run {context.run_number} round {current} (restarted since?)")
        return session

    def _train(
        self, task_name: str, shareable: Shareable, context: RunContext, abort_signal: Signal, current: int
    ) -> Shareable:
        session = self._session(context, current)
        fields = protocol.header_of(shareable, task_name)
        session.open_shares(fields)
        fraction_bits = _fraction_bits(fields)
        del shareable.headers[protocol.HEADER]  # the trainer sees the plain task
        filters = self._result_filters(context)
        fl_ctx = FilterContext.for_task(context, Direction.TASK_RESULT, shareable, peer=names.SERVER)
        if filters.needs_task_data(task_name):
            fl_ctx = replace(fl_ctx, task_data=private_copy(shareable))
        result = self._inner(context).execute(task_name, shareable, context, abort_signal)
        if not isinstance(result, Shareable):
            raise SecAggError(f"the trainer returned {type(result).__name__}, not a Shareable")
        if result.return_code != ReturnCode.OK:
            return result  # the server counts this site as dropped and removes its masks
        try:
            result = filters.apply(result, fl_ctx)
        except FilterError as exc:
            log.error("round %d: %s", current, exc)
            return exc.reply(shareable)  # refused like any failed training: the site counts as dropped
        if result.dxo is None or result.dxo.data_kind not in (DataKind.WEIGHTS, DataKind.WEIGHT_DIFF):
            kind = result.dxo.data_kind.value if result.dxo else "no DXO"
            raise SecAggError(f"the trainer's result is {kind}; only WEIGHTS or WEIGHT_DIFF can be masked")
        return self._masked(result.dxo, session, fraction_bits)

    def _masked(self, dxo: DXO, session: SiteRound, fraction_bits: int) -> Shareable:
        """The update, weighted by its steps, quantized and masked: all that leaves the site."""
        weight = _weight(dxo)
        parties = len(session.maskers)
        masked: dict[str, np.ndarray] = {
            name: ring.quantize(value, weight, fraction_bits, parties, name) for name, value in dxo.data.items()
        }
        session.mask(masked)
        meta: dict[str, Any] = {MetaKey.NUM_STEPS_CURRENT_ROUND: weight, protocol.DATA_KIND_META: dxo.data_kind.value}
        if MetaKey.METRICS in dxo.meta:  # the app's own choice to report them; they travel in the clear
            meta[MetaKey.METRICS] = dxo.meta[MetaKey.METRICS]
        log.info("round %d: sending the masked update (masks shared with %s)", session.round, session.maskers)
        return protocol.collection(masked, meta)

    def _result_filters(self, context: RunContext) -> FilterChains:
        """`result_filters` built (from the app's custom/ folder or fl-broker's filter names) on first use."""
        if self._filters is None:
            from fl_broker.apps.config import ClassResolver  # the app layer, only for nested specs
            from fl_broker.apps.filter_config import filter_list

            where = "SecureTrainer.args.result_filters"
            try:
                built = filter_list(self.result_filters, where, ClassResolver(context.app_dir / "custom"))
            except ConfigError as exc:
                raise SecAggError(f"cannot build the result filters: {exc}") from exc
            self._filters = FilterChains(task_result={self.train_task_name: built}, side="SecureTrainer")
        return self._filters

    def _inner(self, context: RunContext) -> Executor:
        """The app's trainer, built from its spec the first time it is needed."""
        if isinstance(self.trainer, Executor):
            return self.trainer
        from fl_broker.apps.config import ClassResolver, build  # the app layer, only for a nested spec

        where = "SecureTrainer.args.trainer"
        spec = self.trainer
        try:
            resolver = ClassResolver(context.app_dir / "custom")
            built = build(resolver.resolve(spec["path"], where), spec.get("args", {}), where)
        except ConfigError as exc:
            raise SecAggError(f"cannot build the trainer: {exc}") from exc
        if not isinstance(built, Executor):
            raise SecAggError(f"{where}.path: {type(built).__name__} is not an Executor")
        self.trainer = built
        return built


def _check_spec(spec: Any) -> None:
    """A nested component spec: {"path": "module.Class", "args": {...}}."""
    if not isinstance(spec, dict) or not isinstance(spec.get("path"), str):
        raise ValueError(f"trainer must be an executor or {{'path': 'module.Class', 'args': {{...}}}}, got {spec!r}")
    if not isinstance(spec.get("args", {}), dict) or set(spec) - {"path", "args", "id"}:
        raise ValueError(f"trainer spec takes 'path' and 'args' (a map), got {sorted(spec)}")


def _fraction_bits(fields: dict[str, Any]) -> int:
    try:
        return ring.check_fraction_bits(protocol.int_of(fields, "fraction_bits", "train task"))
    except ValueError as exc:
        raise SecAggError(f"train task: {exc}") from exc


def _weight(dxo: DXO) -> float:
    """The update's weight: its NUM_STEPS_CURRENT_ROUND (1 when absent), a finite number >= 0."""
    steps = dxo.get_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND, 1)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Real) or not 0 <= float(steps) < math.inf:
        raise SecAggError(f"{MetaKey.NUM_STEPS_CURRENT_ROUND} must be a finite number >= 0, got {steps!r}")
    return float(steps)
