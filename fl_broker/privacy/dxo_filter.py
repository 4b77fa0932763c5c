"""What the privacy filters share: which Shareables they touch, and the arrays of a model update."""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np

from fl_broker.fl.filters import Filter, FilterContext
from fl_broker.secagg.protocol import DATA_KIND_META
from fl_broker.wire.messages import DXO, DataKind, MetaKey, ReturnCode, Shareable

log = logging.getLogger(__name__)

MODEL_KINDS = frozenset({DataKind.WEIGHTS, DataKind.WEIGHT_DIFF})


class DXOFilter(Filter):
    """A filter of the DXO a Shareable carries. As in FLARE, a Shareable whose return code is not OK, or
    that carries no DXO, passes unchanged; so does a DXO of a kind outside `passes_kinds` (e.g. METRICS for
    a filter of model updates). A DXO of a kind in `refuses_kinds` is refused, naming the kind: a privacy
    filter that silently let an unfiltered update through would be worse than none."""

    passes_kinds: ClassVar[frozenset[DataKind]] = frozenset(DataKind) - MODEL_KINDS
    refuses_kinds: ClassVar[frozenset[DataKind]] = frozenset()
    kinds_hint: ClassVar[str] = ""  # what to send instead of a refused kind, for the refusal's message

    def process(self, shareable: Shareable, fl_ctx: FilterContext) -> Shareable:
        """`shareable` with its DXO replaced by the filtered one (headers and cookies unchanged)."""
        dxo = shareable.dxo
        if shareable.return_code != ReturnCode.OK or dxo is None:
            return shareable
        if DATA_KIND_META in dxo.meta:  # masked words: filtering them would do nothing, silently
            raise ValueError(
                f"{type(self).__name__} cannot filter a secure-aggregation masked update; name it in "
                "SecureTrainer's result_filters, which run on the plain update before it is masked"
            )
        if dxo.data_kind in self.passes_kinds:
            return shareable
        if dxo.data_kind in self.refuses_kinds:
            raise ValueError(f"{type(self).__name__} does not filter {dxo.data_kind.value} data ({self.kinds_hint})")
        shareable.dxo = self.filter_dxo(dxo, fl_ctx)
        return shareable

    @abstractmethod
    def filter_dxo(self, dxo: DXO, fl_ctx: FilterContext) -> DXO:
        """The filtered DXO (new arrays: those given may be read-only)."""


def float_arrays(data: dict[str, Any], what: str) -> dict[str, np.ndarray]:
    """`data`'s values as floating-point arrays; ValueError naming the entry for anything else (an integer
    array cannot carry clipped or noised values without changing its dtype)."""
    arrays = {}
    for name, value in data.items():
        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{what}: {name!r} is {array.dtype}, not a floating-point array")
        arrays[name] = array
    return arrays


def steps_of(dxo: DXO) -> float:
    """NUM_STEPS_CURRENT_ROUND of a DXO (1 when absent), which FLARE's filters divide updates by."""
    steps = dxo.get_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND, 1)
    if isinstance(steps, bool) or not isinstance(steps, (int, float)) or not steps > 0:
        raise ValueError(f"{MetaKey.NUM_STEPS_CURRENT_ROUND} must be a positive number, got {steps!r}")
    return float(steps)


def flatten(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """All values in one float64 vector, entries in sorted name order (FLARE's SVT order)."""
    if not arrays:
        return np.zeros(0)
    return np.concatenate([arrays[name].astype(np.float64).ravel() for name in sorted(arrays)])


def unflatten(vector: np.ndarray, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`vector` cut back into arrays of `like`'s names, shapes and dtypes (the inverse of flatten)."""
    out, start = {}, 0
    for name in sorted(like):
        array = like[name]
        out[name] = vector[start : start + array.size].reshape(array.shape).astype(array.dtype)
        start += array.size
    return out
