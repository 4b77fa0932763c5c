"""hello-pt's model: a small CNN for scikit-learn's 8x8 handwritten digits (1 channel in, 10 classes out)."""

from __future__ import annotations

import torch
from torch import nn


class DigitsNet(nn.Module):
    """Two 3x3 convolutions, a 2x2 max-pool and two dense layers (about 38,000 weights, all float32).
    `seed` fixes the initial weights without touching the process's random state."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng():  # restores the global generator afterwards
            torch.manual_seed(seed)
            self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
            self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
            self.fc1 = nn.Linear(32 * 4 * 4, 64)
            self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)
