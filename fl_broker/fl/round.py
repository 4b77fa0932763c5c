"""One round of Scatter-and-Gather: what it has gathered, and the pure checks that decide whether a result
counts. A refusal is data (a kind plus a human-readable detail); the controller logs it, dead-letters the
result with the detail, and records the outcome in the round explicitly."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from fl_broker.fl.aggregation import peak
from fl_broker.fl.metrics import Metrics, metrics_weight, result_metrics, weighted_mean
from fl_broker.fl.model import ModelLearnable
from fl_broker.fl.workflow import TaskResult
from fl_broker.wire.messages import DXO, DataKind, Header, ReturnCode, Shareable


class RefusalKind(Enum):
    """Why the controller did not count a result."""

    OTHER_ROUND = "other_round"  # late or stray: for another round
    OTHER_TASK = "other_task"  # not the current task of this round
    NOT_SENT = "not_sent"  # the site was not sent this task
    DUPLICATE = "duplicate"  # the site has answered this round already
    TASK_FAILED = "task_failed"  # the site's return code is not OK
    NO_DXO = "no_dxo"
    BAD_METRICS = "bad_metrics"  # the metrics it carries are not numbers (or NaN/Inf)
    MISFIT = "misfit"  # the arrays do not fit the global model (name, shape, dtype, NaN/Inf)
    AGGREGATOR = "aggregator"  # the aggregator refused the contribution

    @property
    def is_answer(self) -> bool:
        """Whether the site has still given its answer for the round (the round no longer waits for it).
        A result meant for something else says nothing about the site's answer to this round."""
        return self in _ANSWERS


_ANSWERS = frozenset(
    {RefusalKind.TASK_FAILED, RefusalKind.NO_DXO, RefusalKind.BAD_METRICS, RefusalKind.MISFIT, RefusalKind.AGGREGATOR}
)


@dataclass(frozen=True)
class Refusal:
    """A refused result: the kind, for code, and the detail, for people (logs, dead-letter header)."""

    kind: RefusalKind
    detail: str

    def __str__(self) -> str:
        return self.detail


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
    refused: dict[str, str] = field(default_factory=dict)  # site -> why its answer was refused
    metrics: dict[str, Metrics] = field(default_factory=dict)  # site -> the metrics of its accepted result
    metric_weights: dict[str, float] = field(default_factory=dict)  # site -> its weight in the round's mean

    def record(self, site: str, refusal: Refusal | None) -> None:
        """Note how `site`'s result was settled: accepted (None) or refused."""
        if refusal is None or refusal.kind.is_answer:
            self.answered.add(site)
        if refusal is None:
            self.accepted += 1
        elif refusal.kind.is_answer:
            self.refused[site] = refusal.detail

    def add_metrics(self, site: str, dxo: DXO) -> Metrics:
        """Keep the metrics of `site`'s accepted result (checked by check_result) and its weight; them."""
        metrics = result_metrics(dxo)
        if not isinstance(metrics, dict):
            return {}
        self.metrics[site], self.metric_weights[site] = metrics, metrics_weight(dxo)
        return metrics

    def metrics_summary(self) -> Metrics:
        """The weighted mean of every metric over the sites whose accepted results reported it."""
        return weighted_mean(self.metrics, self.metric_weights)

    def summary(self) -> str:
        """One line for people: how many results counted, and what became of the others, e.g.
        "round 0: 0 of 2 results accepted: site-1 return code BAD_TASK_DATA; site-2 sent no result"."""
        line = f"round {self.round}: {self.accepted} of {len(self.targets)} results accepted"
        others = [f"{site} {self.refused[site]}" for site in sorted(self.refused)]
        others += [f"{site} sent no result" for site in sorted(self.targets - self.answered)]
        return f"{line}: {'; '.join(others)}" if others else line


def check_against_model(data: dict[str, Any], model: ModelLearnable, *, allow_non_finite: bool) -> str | None:
    """Why a result's arrays do not fit the global model (unknown name, shape, dtype kind, NaN/Inf), or None."""
    for name, value in data.items():
        if name not in model:
            return f"{name!r} is not in the global model"
        expected = np.asarray(model[name])
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:  # e.g. a ragged list: "inhomogeneous shape"
            return f"{name!r} is not a regular array: {exc}"
        if array.shape != expected.shape:
            return f"{name!r} has shape {array.shape}, the global model has {expected.shape}"
        if array.dtype != expected.dtype:
            return f"{name!r} has dtype {array.dtype}, the global model has {expected.dtype}"
        # peak(): two reductions, not a model-sized array of booleans as np.isfinite(array).all() makes.
        if not allow_non_finite and np.issubdtype(array.dtype, np.inexact) and not math.isfinite(peak(array)):
            return f"{name!r} contains NaN or Inf"
    return None


def check_result(state: RoundState, result: TaskResult, *, allow_non_finite: bool) -> Refusal | None:
    """Why `result` cannot be aggregated in this round, or None. Reads `state`, never changes it."""
    contribution_round = result.shareable.cookie_jar.get(Header.CONTRIBUTION_ROUND, result.round)
    if contribution_round != state.round:
        detail = f"result is for round {contribution_round}, the current round is {state.round} (late or stray)"
        return Refusal(RefusalKind.OTHER_ROUND, detail)
    if result.task_id != state.task_id:
        detail = f"result is for task {result.task_id!r}, not the current task of round {state.round}"
        return Refusal(RefusalKind.OTHER_TASK, detail)
    if result.site not in state.targets:
        return Refusal(RefusalKind.NOT_SENT, f"{result.site} was not sent this task")
    if result.site in state.answered:
        return Refusal(RefusalKind.DUPLICATE, f"second result from {result.site} for round {state.round}")
    if result.shareable.return_code != ReturnCode.OK:
        reason = result.shareable.get_header(Header.ERROR_REASON)
        why = f" ({reason[:1000]})" if isinstance(reason, str) and reason else ""  # a site's text, bounded
        return Refusal(RefusalKind.TASK_FAILED, f"return code {result.shareable.return_code.value}{why}")
    dxo = result.shareable.dxo
    if dxo is None:
        return Refusal(RefusalKind.NO_DXO, "result carries no DXO")
    metrics = result_metrics(dxo)
    if isinstance(metrics, str):
        return Refusal(RefusalKind.BAD_METRICS, metrics)
    if dxo.data_kind not in (DataKind.WEIGHTS, DataKind.WEIGHT_DIFF):
        return None  # the aggregator judges other kinds
    problem = check_against_model(dxo.data, state.model, allow_non_finite=allow_non_finite)
    return Refusal(RefusalKind.MISFIT, problem) if problem else None


def stamp_task(task: Shareable, *, name: str, task_id: str, round: int, num_rounds: int) -> Shareable:
    """`task` (the model as the shareable generator made it) named, with its id, and stamped with its round in
    FLARE's headers and in the cookie the result brings back (which says what round it contributes to)."""
    task.task_name = name
    task.task_id = task_id
    task.set_header(Header.CURRENT_ROUND, round)
    task.set_header(Header.NUM_ROUNDS, num_rounds)
    task.cookie_jar[Header.CONTRIBUTION_ROUND] = round
    return task
