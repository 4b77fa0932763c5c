"""Training and testing a PyTorch classifier on arrays held in memory: the loops a small app's executor
and a baseline script share, so both train exactly the same way."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fl_broker.fl.context import Signal


def train_epochs(
    module: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    momentum: float = 0.9,
    seed: int = 0,
    abort_signal: Signal | None = None,
) -> float | None:
    """Train with SGD and cross-entropy for `epochs` passes over (x, y) in a seeded random order; the mean
    loss of the last pass, or None if `abort_signal` was triggered first."""
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum)
    generator = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    module.train()
    last = math.nan
    for _ in range(epochs):
        order, total = torch.randperm(len(labels), generator=generator), 0.0
        for start in range(0, len(labels), batch_size):
            if abort_signal is not None and abort_signal.triggered:
                return None
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(module(inputs[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        last = total / max(1, len(labels))
    return last


@torch.no_grad()
def evaluate(module: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> dict[str, float]:
    """`loss` (mean cross-entropy), `accuracy` and `samples` of the module on (x, y)."""
    module.eval()
    loss_sum, correct = 0.0, 0
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    for start in range(0, len(y), batch_size):
        inputs = torch.from_numpy(x[start : start + batch_size])
        labels = torch.from_numpy(y[start : start + batch_size])
        logits = module(inputs)
        loss_sum += float(loss_fn(logits, labels))
        correct += int((logits.argmax(dim=1) == labels).sum())
    samples = len(y)
    return {"loss": loss_sum / max(1, samples), "accuracy": correct / max(1, samples), "samples": float(samples)}
