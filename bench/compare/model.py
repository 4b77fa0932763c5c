"""The model of every comparison row, shared by both virtualenvs (numpy only, no fl-broker, no Flower).

A row's model is one float32 array: the 3x3 rows use hello-numpy-sag's [[1..9]], the large rows a vector of
zeros. Each client adds 1 to every weight; the server averages; so after R rounds the global model is
exactly `initial + R` (all values stay small integers, which float32 holds and averages exactly).
"""

from __future__ import annotations

import numpy as np

HELLO_SIZE = 9  # the 3x3 model of hello-numpy-sag


def initial_weights(size: int) -> np.ndarray:
    """The starting model of a row with `size` float32 weights."""
    if size == HELLO_SIZE:
        return np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    return np.zeros(size, dtype=np.float32)


def train(weights: np.ndarray) -> np.ndarray:
    """One client's "training": every weight plus 1, as a new float32 array."""
    return weights + np.float32(1)


def check_final(weights: np.ndarray, size: int, rounds: int) -> str | None:
    """None if `weights` is exactly `initial + rounds`, else what is wrong with it."""
    expected = initial_weights(size) + np.float32(rounds)
    if weights.dtype != np.float32 or weights.size != expected.size:
        return f"final model is {weights.dtype} x {weights.size}, expected float32 x {expected.size}"
    wrong = np.count_nonzero(weights.reshape(expected.shape) != expected)
    if wrong:
        return f"{wrong} of {expected.size} final weights differ from initial + {rounds}"
    return None
