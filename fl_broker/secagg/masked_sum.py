"""The server's aggregator for masked updates: a running sum modulo 2**64 (in time, O(model) memory), which
is meaningless until the masks are removed from it, then the weighted mean of the round's updates."""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any

import numpy as np

from fl_broker.errors import AggregationError
from fl_broker.fl.aggregation import Aggregator
from fl_broker.fl.model import ModelLearnable
from fl_broker.secagg import protocol, ring
from fl_broker.wire.messages import DXO, DataKind, MetaKey

log = logging.getLogger(__name__)


class MaskedSum(Aggregator):
    """Adds up the masked updates of one round; `sums` is handed to the unmasking, then `aggregate()` gives
    the weighted mean (each update's weight is its NUM_STEPS_CURRENT_ROUND, which the site applied)."""

    def __init__(self, *, fraction_bits: int, expected_data_kind: DataKind, max_num_steps: float) -> None:
        self.fraction_bits = fraction_bits
        self.expected_data_kind = expected_data_kind
        self.max_num_steps = max_num_steps
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._dtypes: dict[str, np.dtype[Any]] = {}
        self.sums: dict[str, np.ndarray] = {}
        self.contributors: list[str] = []
        self.total_weight = 0.0
        self.unmasked = False

    def begin(self, model: ModelLearnable) -> None:
        """Start a round whose updates have the global model's names and shapes."""
        arrays = {name: np.asarray(value) for name, value in model.items()}
        self._shapes = {name: array.shape for name, array in arrays.items()}
        self._dtypes = {name: array.dtype for name, array in arrays.items()}
        self.sums = {name: np.zeros(shape, dtype=np.uint64) for name, shape in self._shapes.items()}
        self.contributors, self.total_weight, self.unmasked = [], 0.0, False

    def accept(self, site: str, dxo: DXO) -> str | None:
        """Add one site's masked update to the sum, or say why it does not fit the round."""
        problem = self._check(dxo)
        if problem:
            return problem
        for name, total in self.sums.items():
            np.add(total, dxo.data[name], out=total)  # wraps modulo 2**64: the ring's addition
        self.contributors.append(site)
        self.total_weight += float(dxo.meta[MetaKey.NUM_STEPS_CURRENT_ROUND])
        return None

    def _check(self, dxo: DXO) -> str | None:
        """Why a masked update cannot be added, or None."""
        if dxo.data_kind != DataKind.COLLECTION:
            return f"data kind {dxo.data_kind.value}: a masked update is a COLLECTION"
        kind = dxo.meta.get(protocol.DATA_KIND_META)
        if kind != self.expected_data_kind.value:
            return f"the update under the masks is {kind!r}, expected {self.expected_data_kind.value}"
        steps = dxo.meta.get(MetaKey.NUM_STEPS_CURRENT_ROUND)
        if (
            not isinstance(steps, numbers.Real)
            or isinstance(steps, bool)
            or not 0 <= float(steps) <= self.max_num_steps
        ):
            return f"{MetaKey.NUM_STEPS_CURRENT_ROUND} is {steps!r}, outside 0 .. {self.max_num_steps:g}"
        if set(dxo.data) != set(self.sums):
            return f"names {sorted(dxo.data)} differ from the global model's {sorted(self.sums)}"
        for name, value in dxo.data.items():
            if not isinstance(value, np.ndarray) or value.dtype != np.uint64 or value.shape != self._shapes[name]:
                return f"{name!r} is not a uint64 array of shape {self._shapes[name]}"
        return None

    def aggregate(self) -> DXO:
        """The weighted mean of the accepted updates, once their masks are removed; resets the round."""
        try:
            if not self.unmasked:
                raise AggregationError("the masks were not removed from the sum")
            if not (self.total_weight > 0 and math.isfinite(self.total_weight)):
                raise AggregationError(f"the updates' total weight is {self.total_weight}")
            mean = {
                name: ring.dequantize(total, self.fraction_bits, self.total_weight, self._dtypes[name])
                for name, total in self.sums.items()
            }
        finally:
            sites, self.sums, self.contributors = self.contributors, {}, []
        log.info("aggregated %d masked updates from %s (total weight %g)", len(sites), sites, self.total_weight)
        return DXO(data_kind=self.expected_data_kind, data=mean, meta={"contributors": sites})
