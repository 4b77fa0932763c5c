"""Fixed-point encoding of updates into the ring of integers modulo 2**64, where the masks live.

A site sends round(weight * value * 2**fraction_bits) as a 64-bit two's-complement word; the masks are
uniform words added modulo 2**64 (numpy's uint64 arithmetic wraps exactly so), so they cancel exactly in
the sum and the server decodes the sum of the weighted updates, each off by at most half a step
(2**-fraction_bits), as long as the true sum stays within +-2**63 (`max_abs` is the bound each site checks).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fl_broker.errors import SecAggError
from fl_broker.fl.aggregation import peak

RING_BITS = 64
MAX_FRACTION_BITS = 40


def check_fraction_bits(fraction_bits: int) -> int:
    """`fraction_bits` if it is a usable precision (1 .. 40 bits after the point), else ValueError."""
    if isinstance(fraction_bits, bool) or not isinstance(fraction_bits, int):
        raise ValueError(f"fraction_bits must be an int, got {fraction_bits!r}")
    if not 1 <= fraction_bits <= MAX_FRACTION_BITS:
        raise ValueError(f"fraction_bits must be between 1 and {MAX_FRACTION_BITS}, got {fraction_bits}")
    return fraction_bits


def max_abs(fraction_bits: int, parties: int) -> float:
    """The largest |weight * value| one of `parties` sites may send so that no sum can leave the ring."""
    return 2.0 ** (RING_BITS - 2) / parties / 2**fraction_bits  # 2**62: a margin for rounding


def quantize(array: Any, weight: float, fraction_bits: int, parties: int, name: str) -> np.ndarray:
    """`weight * array` as fixed-point ring elements (uint64, same shape); SecAggError naming `name` if it
    holds NaN/Inf or values too large for the ring with `parties` contributions."""
    values = np.asarray(array)
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_) or np.iscomplexobj(values):
        raise SecAggError(f"{name!r} has dtype {values.dtype}: only real numbers can be aggregated securely")
    largest = peak(values) * weight
    if not math.isfinite(largest):
        raise SecAggError(f"{name!r} contains NaN or Inf")
    limit = max_abs(fraction_bits, parties)
    if largest >= limit:
        raise SecAggError(
            f"{name!r} reaches {largest:.3g} (weight included); with {parties} sites and fraction_bits="
            f"{fraction_bits} the ring holds at most {limit:.3g}"
        )
    scaled = np.rint(values.astype(np.float64) * (weight * 2.0**fraction_bits))
    return scaled.astype(np.int64).view(np.uint64)


def dequantize(total: np.ndarray, fraction_bits: int, total_weight: float, dtype: np.dtype[Any]) -> np.ndarray:
    """The weighted mean from the unmasked ring sum `total` (uint64) of weighted updates, in `dtype`."""
    signed = total.view(np.int64).astype(np.float64)
    signed /= 2.0**fraction_bits * total_weight
    return signed.astype(dtype, copy=False)
