"""Metrics that sites send with their results: checked, weighted and summarised, as plain functions.

A training result carries its metrics in the DXO's meta under `MetaKey.METRICS` (a dict name -> number;
FLARE's `MetaKey.INITIAL_METRICS`, one number, counts as the metric "initial_metrics"); a validation result
is a METRICS DXO whose data is that dict. Either way every value must be a finite real number: a metric
that is not is a refusal of the result, naming the metric.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from fl_broker.wire.messages import DXO, DataKind, MetaKey

Metrics = dict[str, float]

MAX_METRICS = 64  # per result: metrics are a few numbers, not a way to ship data past the model checks
MAX_NAME_LENGTH = 64


def check_metrics(values: Any) -> Metrics | str:
    """`values` as metrics (names -> float), or why they are not: not a dict, too many, a name that is not
    short text, a value that is not a real number (a bool is not), NaN or Inf."""
    if not isinstance(values, Mapping):
        return f"metrics must be a dict of name -> number, got {type(values).__name__}"
    if len(values) > MAX_METRICS:
        return f"{len(values)} metrics, at most {MAX_METRICS} are taken"
    metrics: Metrics = {}
    for name, value in values.items():
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
            return f"metric name {name!r} must be text of 1 to {MAX_NAME_LENGTH} characters"
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            return f"metric {name!r} is not a number: {value!r}"
        if not math.isfinite(value):
            return f"metric {name!r} is {float(value)}"
        metrics[name] = float(value)
    return metrics


def result_metrics(dxo: DXO) -> Metrics | str | None:
    """The metrics a training result's DXO carries in its meta (None: it carries none), or why they are
    refused."""
    found: dict[str, Any] = {}
    raw = dxo.meta.get(MetaKey.METRICS)
    if raw is not None:
        if not isinstance(raw, Mapping):
            return f"meta {MetaKey.METRICS!r} must be a dict of name -> number, got {type(raw).__name__}"
        found.update(raw)
    if MetaKey.INITIAL_METRICS in dxo.meta:
        found.setdefault(MetaKey.INITIAL_METRICS, dxo.meta[MetaKey.INITIAL_METRICS])
    return check_metrics(found) if found else None


def validation_metrics(dxo: DXO | None) -> Metrics | str:
    """The metrics of a validation result (a METRICS DXO of finite numbers), or why it has none."""
    if dxo is None or dxo.data_kind != DataKind.METRICS:
        kind = "no DXO" if dxo is None else f"a {dxo.data_kind.value} DXO"
        return f"a validation result must be a METRICS DXO, got {kind}"
    return check_metrics(dxo.data)


def metrics_weight(dxo: DXO) -> float:
    """How much a site's metrics count in a round's mean: its aggregation weight, NUM_STEPS_CURRENT_ROUND
    (FLARE's trainers set it to their step or sample count), or 1 when it gives none that is positive."""
    steps = dxo.meta.get(MetaKey.NUM_STEPS_CURRENT_ROUND)
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, numbers.Real):
        return 1.0
    weight = float(steps)
    return weight if math.isfinite(weight) and weight > 0 else 1.0


def weighted_mean(per_site: Mapping[str, Metrics], weights: Mapping[str, float]) -> Metrics:
    """Each metric's mean over the sites that report it, weighted by `weights` (1 for a site not in it).
    Computed from weight shares, so large weights cannot overflow the sum; a mean that still is not finite
    (values near the float limit) is left out."""
    totals: dict[str, float] = {}
    for site, metrics in per_site.items():
        for name in metrics:
            totals[name] = totals.get(name, 0.0) + weights.get(site, 1.0)
    means: dict[str, float] = dict.fromkeys(totals, 0.0)
    for site, metrics in per_site.items():
        for name, value in metrics.items():
            means[name] += weights.get(site, 1.0) / totals[name] * value
    return {name: mean for name, mean in means.items() if math.isfinite(mean)}  # in the order the sites name them


def accepted_metrics(dxo: DXO | None) -> dict[str, Any]:
    """What an after_contribution_accept event says of an accepted result's metrics: {"metrics": ...,
    "metrics_weight": ...}, or {} when it carries none (or none that check_result would have let through)."""
    metrics = result_metrics(dxo) if dxo is not None else None
    return {"metrics": metrics, "metrics_weight": metrics_weight(dxo)} if isinstance(metrics, dict) and dxo else {}
