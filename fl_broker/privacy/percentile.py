"""FLARE 2.0's PercentilePrivacy: share only the largest changes of an update, each truncated
(Shokri and Shmatikov, "Privacy-preserving deep learning", CCS 2015)."""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np

from fl_broker.fl.filters import FilterContext
from fl_broker.privacy.dxo_filter import MODEL_KINDS, DXOFilter, float_arrays, steps_of
from fl_broker.wire.messages import DXO, DataKind

log = logging.getLogger(__name__)


class PercentilePrivacy(DXOFilter):
    """FLARE's arguments and math on a WEIGHT_DIFF: with the update taken per local step (divided by
    NUM_STEPS_CURRENT_ROUND), `cutoff` is the `percentile`-th percentile of the absolute values of all its
    entries; every entry of magnitude below the cutoff becomes 0, every other one is clipped to
    [-gamma, gamma], and the update is scaled back by the number of steps. Scalar entries pass unchanged.

    A WEIGHTS result is refused (the math is defined on differences: truncating weights to gamma would
    destroy the model). Where FLARE's filter silently does nothing for a `gamma` <= 0 or a `percentile`
    outside 0..100, this one refuses them when the app loads."""

    passes_kinds: ClassVar[frozenset[DataKind]] = frozenset(DataKind) - MODEL_KINDS
    refuses_kinds: ClassVar[frozenset[DataKind]] = frozenset({DataKind.WEIGHTS})
    kinds_hint: ClassVar[str] = "send WEIGHT_DIFF: the update, not the weights"

    def __init__(self, percentile: float = 10, gamma: float = 0.01) -> None:
        if not 0 <= percentile <= 100:
            raise ValueError(f"percentile must be between 0 and 100, got {percentile}")
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.percentile = float(percentile)
        self.gamma = float(gamma)

    def filter_dxo(self, dxo: DXO, fl_ctx: FilterContext) -> DXO:
        """The truncated update."""
        arrays = float_arrays(dxo.data, "PercentilePrivacy")
        if not arrays:
            return dxo
        steps = steps_of(dxo)
        per_step = {name: array.astype(np.float64) / steps for name, array in arrays.items()}
        magnitudes = np.concatenate([np.abs(value).ravel() for value in per_step.values()])
        cutoff = float(np.percentile(magnitudes, self.percentile))
        log.info(
            "PercentilePrivacy: cutoff %g (percentile %g of %d values, largest %g), gamma %g, steps %g",
            cutoff, self.percentile, magnitudes.size, float(magnitudes.max()), self.gamma, steps,
        )  # fmt: skip
        out = {}
        for name, value in per_step.items():
            if value.ndim == 0:
                out[name] = arrays[name]
                continue
            kept = np.where(np.abs(value) < cutoff, 0.0, np.clip(value, -self.gamma, self.gamma))
            out[name] = (kept * steps).astype(arrays[name].dtype)
        return DXO(data_kind=dxo.data_kind, data=out, meta=dxo.meta)
