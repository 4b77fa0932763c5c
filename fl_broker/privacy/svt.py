"""FLARE 2.0's SVTPrivacy: the sparse vector technique, sharing a noisy fraction of an update's entries
selected by a noisy threshold (Lyu et al., "Understanding the Sparse Vector Technique for Differential
Privacy", 2017)."""

from __future__ import annotations

import logging
import math
from typing import ClassVar

import numpy as np

from fl_broker.fl.filters import FilterContext
from fl_broker.privacy.dxo_filter import MODEL_KINDS, DXOFilter, flatten, float_arrays, steps_of, unflatten
from fl_broker.wire.messages import DXO, DataKind

log = logging.getLogger(__name__)


class SVTPrivacy(DXOFilter):
    """FLARE's arguments and math on a WEIGHT_DIFF, with the update taken per local step:

    - `n` = ceil(`fraction` x number of entries) entries are shared;
    - threshold = `tau` + Laplace(2 `gamma` / `epsilon`);
    - an entry is accepted when |clip(entry, -gamma, gamma)| + Laplace(4 `gamma` n / eps2) reaches the
      threshold, with eps2 = `epsilon` (2 n)^(2/3); entries not yet accepted are queried again, with fresh
      noise, until at least n were;
    - n of the accepted entries are drawn (with replacement when `replace`, FLARE's default), and each
      drawn entry is shared as clip(entry + Laplace(2 `gamma` / `noise_var`), -gamma, gamma);
    - every other entry is 0. FLARE leaves the accepted entries that were not drawn at their exact value;
      here they are 0 as well, since sharing them unchanged would defeat the filter.

    Scalar entries pass unchanged. A WEIGHTS result is refused, as in PercentilePrivacy. `seed` (fl-broker's
    own, for tests) fixes the noise; leave it out in real use, or anyone who knows it can remove the noise.
    """

    passes_kinds: ClassVar[frozenset[DataKind]] = frozenset(DataKind) - MODEL_KINDS
    refuses_kinds: ClassVar[frozenset[DataKind]] = frozenset({DataKind.WEIGHTS})
    kinds_hint: ClassVar[str] = "send WEIGHT_DIFF: the update, not the weights"

    def __init__(
        self,
        fraction: float = 0.1,
        epsilon: float = 0.1,
        noise_var: float = 0.1,
        gamma: float = 1e-5,
        tau: float = 1e-6,
        replace: bool = True,
        seed: int | None = None,
    ) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        for name, value in (("epsilon", epsilon), ("noise_var", noise_var), ("gamma", gamma)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.fraction, self.epsilon, self.noise_var = float(fraction), float(epsilon), float(noise_var)
        self.gamma, self.tau, self.replace = float(gamma), float(tau), bool(replace)
        self.rng = np.random.default_rng(seed)

    def filter_dxo(self, dxo: DXO, fl_ctx: FilterContext) -> DXO:
        """The sparse, noisy update."""
        arrays = float_arrays(dxo.data, "SVTPrivacy")
        steps = steps_of(dxo)
        vector = flatten(arrays) / steps
        if vector.size == 0:
            return dxo
        shared = self.sparse_noisy(vector)
        out = unflatten(shared * steps, arrays)
        for name, array in arrays.items():
            if array.ndim == 0:
                out[name] = array
        return DXO(data_kind=dxo.data_kind, data=out, meta=dxo.meta)

    def sparse_noisy(self, vector: np.ndarray) -> np.ndarray:
        """The SVT release of one flat update (per step): n noisy entries, the rest 0."""
        n = min(math.ceil(vector.size * self.fraction), vector.size)
        threshold = self.tau + self.rng.laplace(scale=2.0 * self.gamma / self.epsilon)
        query_scale = 4.0 * self.gamma * n / (self.epsilon * (2.0 * n) ** (2.0 / 3.0))
        accepted = self._accepted(np.abs(np.clip(vector, -self.gamma, self.gamma)), threshold, query_scale, n)
        drawn = self.rng.choice(accepted, size=n, replace=self.replace)
        noise = self.rng.laplace(scale=2.0 * self.gamma / self.noise_var, size=drawn.shape)
        shared = np.zeros_like(vector)
        shared[drawn] = np.clip(vector[drawn] + noise, -self.gamma, self.gamma)
        log.info(
            "SVTPrivacy: %d of %d entries shared (epsilon %g, threshold %g, gamma %g)",
            np.unique(drawn).size, vector.size, self.epsilon, threshold, self.gamma,
        )  # fmt: skip
        return shared

    def _accepted(self, clipped: np.ndarray, threshold: float, scale: float, n: int) -> np.ndarray:
        """Indices whose noisy clipped magnitude reached the threshold, asking again until n were."""
        accepted: list[np.ndarray] = []
        count, candidates = 0, np.arange(clipped.size)
        while count < n:
            above = clipped[candidates] + self.rng.laplace(scale=scale, size=candidates.size) >= threshold
            accepted.append(candidates[above])
            count += int(above.sum())
            candidates = candidates[~above]
        return np.concatenate(accepted)
