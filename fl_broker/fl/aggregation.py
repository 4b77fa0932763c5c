"""Aggregation: a pure weighted mean, and FLARE's in-time accumulate-weighted aggregator built on it.

In-time means each contribution is folded into a running weighted sum as it arrives, so memory is
O(model), not O(clients x model).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from fl_broker.wire.messages import DXO, DataKind, MetaKey

log = logging.getLogger(__name__)


def _accumulator_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    # Floats keep their own precision (a float64 sum would double the server's memory for float32 models);
    # integers and bools are summed as float64 so the mean is not truncated.
    return dtype if np.issubdtype(dtype, np.inexact) else np.dtype(np.float64)


class WeightedSum:
    """A running sum of weighted arrays with one shape/dtype per name; `mean()` divides by the total weight."""

    def __init__(self) -> None:
        self._sums: dict[str, np.ndarray] = {}
        self._dtypes: dict[str, np.dtype[Any]] = {}
        self.total_weight = 0.0
        self.count = 0

    def check(self, data: Mapping[str, Any]) -> str | None:
        """Why `data` cannot be added (names, shapes or dtype kinds differ from earlier ones), or None."""
        if not self._sums:
            return None
        if set(data) != set(self._sums):
            return f"names {sorted(data)} differ from {sorted(self._sums)}"
        for name, value in data.items():
            array = np.asarray(value)
            if array.shape != self._sums[name].shape:
                return f"{name!r} has shape {array.shape}, expected {self._sums[name].shape}"
            if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
                return f"{name!r} has non-numeric dtype {array.dtype}"
        return None

    def add(self, data: Mapping[str, Any], weight: float) -> None:
        """Fold `data` in with `weight`. Call `check` first."""
        for name, value in data.items():
            array = np.asarray(value)
            if name not in self._sums:
                self._dtypes[name] = array.dtype
                self._sums[name] = np.zeros(array.shape, dtype=_accumulator_dtype(array.dtype))
            acc = self._sums[name]
            # In place, without a temporary of the full weighted array when weight is 1.
            if weight == 1.0:
                np.add(acc, array, out=acc, casting="unsafe")
            else:
                acc += np.multiply(array, weight, dtype=acc.dtype)
        self.total_weight += weight
        self.count += 1

    def mean(self) -> dict[str, np.ndarray]:
        """The weighted mean of everything added, in each name's original dtype. Divides in place: the sum
        is used up (aggregate() starts a new one for the next round)."""
        if self.total_weight <= 0:
            raise ValueError("nothing with a positive weight was added")
        for acc in self._sums.values():
            acc /= self.total_weight
        return {name: acc.astype(self._dtypes[name], copy=False) for name, acc in self._sums.items()}


def weighted_mean(contributions: Iterable[tuple[Mapping[str, Any], float]]) -> dict[str, np.ndarray]:
    """Weighted mean of dicts of arrays; every dict must have the same names and shapes."""
    total = WeightedSum()
    for data, weight in contributions:
        problem = total.check(data)
        if problem:
            raise ValueError(problem)
        total.add(data, weight)
    return total.mean()


class Aggregator(ABC):
    """Collects the contributions of one round and produces the aggregated DXO."""

    @abstractmethod
    def accept(self, site: str, dxo: DXO) -> str | None:
        """Fold in one site's result. Returns None if accepted, else the reason it was refused."""

    @abstractmethod
    def aggregate(self) -> DXO:
        """The aggregated result of the accepted contributions; resets for the next round."""


class InTimeAccumulateWeightedAggregator(Aggregator):
    """Weighted mean of WEIGHTS or WEIGHT_DIFF results, computed as they arrive.

    A contribution's weight is `aggregation_weights[site]` (default 1.0) times the DXO meta
    `NUM_STEPS_CURRENT_ROUND` (default 1, with a warning).
    """

    def __init__(
        self,
        *,
        expected_data_kind: str = "WEIGHTS",
        aggregation_weights: dict[str, float] | None = None,
        exclude_vars: list[str] | None = None,
    ) -> None:
        kind = DataKind(expected_data_kind)
        if kind not in (DataKind.WEIGHTS, DataKind.WEIGHT_DIFF):
            raise ValueError(f"expected_data_kind must be WEIGHTS or WEIGHT_DIFF, got {expected_data_kind!r}")
        for site, weight in (aggregation_weights or {}).items():
            if not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(f"aggregation_weights[{site!r}] must be a number >= 0, got {weight!r}")
        self.expected_data_kind = kind
        self.aggregation_weights = dict(aggregation_weights or {})
        self.exclude_vars = set(exclude_vars or [])
        self._sum = WeightedSum()
        self._sites: list[str] = []

    def accept(self, site: str, dxo: DXO) -> str | None:
        if dxo.data_kind != self.expected_data_kind:
            return f"data kind {dxo.data_kind.value}, expected {self.expected_data_kind.value}"
        steps = dxo.get_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND)
        if steps is None:
            log.warning("%s sent no %s; counting its result with 1 step", site, MetaKey.NUM_STEPS_CURRENT_ROUND)
            steps = 1
        if isinstance(steps, bool) or not isinstance(steps, (int, float)) or steps < 0:
            return f"{MetaKey.NUM_STEPS_CURRENT_ROUND} must be a number >= 0, got {steps!r}"
        data = {k: v for k, v in dxo.data.items() if k not in self.exclude_vars}
        problem = self._sum.check(data)
        if problem:
            return problem
        weight = float(self.aggregation_weights.get(site, 1.0)) * float(steps)
        self._sum.add(data, weight)
        self._sites.append(site)
        return None

    def aggregate(self) -> DXO:
        try:
            mean = self._sum.mean()
        finally:
            sites, self._sites = self._sites, []
            summed, self._sum = self._sum, WeightedSum()
        log.info("aggregated %d contributions from %s (total weight %g)", summed.count, sites, summed.total_weight)
        return DXO(data_kind=self.expected_data_kind, data=dict(mean), meta={"contributors": sites})
