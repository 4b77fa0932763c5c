"""Gaussian differential privacy on a site's update: clip it to a fixed L2 norm, add Gaussian noise, and
say what that guarantees (the DP-FedAvg mechanism of McMahan et al., "Learning Differentially Private
Recurrent Language Models", ICLR 2018, applied by each site to its own update)."""

from __future__ import annotations

import logging
import math
import threading
from typing import ClassVar

import numpy as np

from fl_broker.fl.filters import FilterContext
from fl_broker.privacy.dxo_filter import MODEL_KINDS, DXOFilter, flatten, float_arrays, unflatten
from fl_broker.wire.messages import DXO, DataKind, MetaKey

log = logging.getLogger(__name__)


def gaussian_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """The epsilon of `releases` Gaussian releases with noise std = `noise_multiplier` x sensitivity, at
    `delta`: Renyi DP composes to releases x alpha / (2 z^2), and its conversion to (epsilon, delta)
    (Mironov 2017, Prop. 3) minimised over alpha > 1 in closed form is
    releases / (2 z^2) + sqrt(2 releases ln(1/delta)) / z."""
    if noise_multiplier <= 0:
        return math.inf
    z, k = noise_multiplier, releases
    return k / (2 * z * z) + math.sqrt(2 * k * math.log(1 / delta)) / z


class GaussianPrivacy(DXOFilter):
    """A site's result filter: the update u (the WEIGHT_DIFF itself, or for WEIGHTS the returned weights
    minus the task's) is scaled to an L2 norm of at most `clip_norm` over all its entries together, then
    N(0, (noise_multiplier x clip_norm)^2) is added to every entry. WEIGHTS go back as the task's weights
    plus the noisy update. Entries must be floating-point arrays.

    The privacy parameters go into the result's meta under MetaKey.METRICS: dp_clip_norm,
    dp_noise_multiplier, dp_noise_std, dp_delta, dp_releases (this site's releases in the run so far, at
    least the round number + 1) and dp_epsilon (for those releases; left out when there is no noise). The
    guarantee is per site: its update with or without any of its data, sensitivity clip_norm.

    `seed` fixes the noise, for tests only: whoever knows the seed (the app's config is not secret) can
    take the noise off again."""

    passes_kinds: ClassVar[frozenset[DataKind]] = frozenset(DataKind) - MODEL_KINDS
    needs_task_data: ClassVar[bool] = True

    def __init__(self, clip_norm: float, noise_multiplier: float, delta: float = 1e-5, seed: int | None = None) -> None:
        if not (math.isfinite(clip_norm) and clip_norm > 0):
            raise ValueError(f"clip_norm must be a positive number, got {clip_norm}")
        if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
            raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        self.clip_norm, self.noise_multiplier, self.delta = float(clip_norm), float(noise_multiplier), float(delta)
        self.rng = np.random.default_rng(seed)
        self.releases = 0
        self._lock = threading.Lock()
        if noise_multiplier == 0:
            log.warning("GaussianPrivacy with noise_multiplier 0 only clips: it gives no privacy guarantee")
        if seed is not None:
            log.warning("GaussianPrivacy is seeded: its noise can be reproduced by anyone who knows the seed")

    @property
    def noise_std(self) -> float:
        """The standard deviation of the noise added to each entry."""
        return self.noise_multiplier * self.clip_norm

    def filter_dxo(self, dxo: DXO, fl_ctx: FilterContext) -> DXO:
        """The clipped, noisy update (or weights), its privacy parameters in its metrics."""
        arrays = float_arrays(dxo.data, "GaussianPrivacy")
        base = self._base(dxo, arrays, fl_ctx)
        update = flatten(arrays) - flatten(base) if base else flatten(arrays)
        noisy = self.privatize(update)
        out = unflatten(noisy + flatten(base) if base else noisy, arrays)
        with self._lock:
            self.releases = max(self.releases + 1, (fl_ctx.current_round or 0) + 1)
            releases = self.releases
        meta = dict(dxo.meta)
        meta[MetaKey.METRICS] = {**(meta.get(MetaKey.METRICS) or {}), **self.metrics(releases)}
        return DXO(data_kind=dxo.data_kind, data=out, meta=meta)

    def privatize(self, update: np.ndarray) -> np.ndarray:
        """`update` clipped to L2 norm clip_norm, plus N(0, noise_std^2) per entry."""
        norm = float(np.linalg.norm(update))
        clipped = update * min(1.0, self.clip_norm / norm) if norm > 0 else update
        return clipped + self.rng.normal(0.0, self.noise_std, size=update.shape)

    def metrics(self, releases: int) -> dict[str, float]:
        """The privacy parameters recorded with a result."""
        found = {
            "dp_clip_norm": self.clip_norm,
            "dp_noise_multiplier": self.noise_multiplier,
            "dp_noise_std": self.noise_std,
            "dp_delta": self.delta,
            "dp_releases": float(releases),
        }
        if self.noise_multiplier > 0:
            found["dp_epsilon"] = gaussian_epsilon(self.noise_multiplier, releases, self.delta)
        return found

    @staticmethod
    def _base(dxo: DXO, arrays: dict[str, np.ndarray], fl_ctx: FilterContext) -> dict[str, np.ndarray]:
        """For WEIGHTS, the task's weights the update is taken against ({} for a WEIGHT_DIFF)."""
        if dxo.data_kind is not DataKind.WEIGHTS:
            return {}
        task = fl_ctx.task_data.dxo if fl_ctx.task_data is not None else None
        if task is None:
            raise ValueError("GaussianPrivacy on WEIGHTS needs the task's weights: use it as a site's result filter")
        base = float_arrays({name: task.data.get(name) for name in arrays if name in task.data}, "the task")
        missing = sorted(set(arrays) - set(base))
        if missing:
            raise ValueError(
                f"GaussianPrivacy: the task has no {', '.join(map(repr, missing))} to take an update against"
            )
        for name, array in arrays.items():
            if base[name].shape != array.shape:
                raise ValueError(f"GaussianPrivacy: {name!r} has shape {array.shape}, the task's {base[name].shape}")
        return base
