"""FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks") for a site's trainer.

A FedProx client minimises its local loss plus a proximal term that keeps its weights near the global model
the task carried:

    loss(w) + mu / 2 * ||w - w_global||^2        whose gradient adds   mu * (w - w_global)

The server side is unchanged (Scatter-and-Gather with any aggregator); `mu` is the trainer's config key
(`config_fed_client.json`: the executor's `args`). With mu = 0 a FedProx trainer is a FedAvg trainer. This
module is numpy only; `fl_broker.fl.fedprox_pt.PTFedProxLoss` is the same term for PyTorch (the `pt`
extra).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

Weights = Mapping[str, np.ndarray]


def check_mu(mu: float) -> float:
    """`mu` as a float if it is a finite number >= 0; ValueError naming it if not."""
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu) or mu < 0:
        raise ValueError(f"mu must be a finite number >= 0, got {mu!r}")
    return float(mu)


class FedProx:
    """The proximal term for one task: `mu` and the global weights the task carried (copied, so a trainer
    that updates its weights in place cannot move them). Only names in both dicts take part: a trainer's
    extra local arrays are its own."""

    def __init__(self, global_weights: Weights, *, mu: float) -> None:
        self.mu = check_mu(mu)
        self.global_weights = {name: np.array(value, copy=True) for name, value in global_weights.items()}

    def term(self, weights: Weights) -> float:
        """mu / 2 * ||w - w_global||^2 over every shared array, to add to the local loss."""
        total = 0.0
        for _name, w, anchor in self._pairs(weights):
            diff = np.asarray(w, dtype=np.float64) - anchor
            total += float(np.vdot(diff, diff))
        return self.mu / 2 * total

    def gradient(self, weights: Weights) -> dict[str, np.ndarray]:
        """mu * (w - w_global) for every shared array (in each array's dtype), to add to the local gradient."""
        return {name: (self.mu * (w - anchor)).astype(w.dtype, copy=False) for name, w, anchor in self._pairs(weights)}

    def add_to(self, gradients: Mapping[str, np.ndarray], weights: Weights) -> dict[str, np.ndarray]:
        """`gradients` with the proximal gradient added where there is one (a FedProx step's gradient)."""
        proximal = self.gradient(weights)
        return {name: g + proximal[name] if name in proximal else g for name, g in gradients.items()}

    def _pairs(self, weights: Weights) -> list[tuple[str, np.ndarray, np.ndarray]]:
        pairs = []
        for name, w in weights.items():
            anchor = self.global_weights.get(name)
            if anchor is None:
                continue
            w = np.asarray(w)
            if w.shape != anchor.shape:
                raise ValueError(f"{name!r} has shape {w.shape}, the global model's is {anchor.shape}")
            pairs.append((name, w, anchor))
        return pairs
