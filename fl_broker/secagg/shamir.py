"""Shamir secret sharing of 32-byte secrets over the prime field GF(2**521 - 1): any `threshold` shares
give the secret back, fewer say nothing about it.

A share is the value of a random polynomial of degree threshold - 1 (its constant term the secret) at
x = 1 .. holders; on the wire it is 66 big-endian bytes (msgpack's integers stop at 64 bits).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from fl_broker.errors import SecAggError

PRIME = 2**521 - 1  # a Mersenne prime, well above any 32-byte secret
SHARE_BYTES = 66  # ceil(521 / 8)
SECRET_BYTES = 32


def split(secret: bytes, holders: int, threshold: int) -> list[bytes]:
    """Shares of `secret` for holders 1 .. `holders` (the list's index + 1 is the holder's x)."""
    if len(secret) != SECRET_BYTES:
        raise SecAggError(f"a shared secret has {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= holders:
        raise SecAggError(f"need 1 <= threshold <= holders, got threshold {threshold} for {holders} holders")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return [_evaluate(coefficients, x).to_bytes(SHARE_BYTES, "big") for x in range(1, holders + 1)]


def _evaluate(coefficients: list[int], x: int) -> int:
    value = 0
    for coefficient in reversed(coefficients):  # Horner's rule
        value = (value * x + coefficient) % PRIME
    return value


def combine(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """The secret from at least `threshold` shares, keyed by their holder's x. SecAggError if there are too
    few, or if they do not come from one sharing of a 32-byte secret (a wrong share shows as a value that
    does not fit in 32 bytes, with overwhelming probability)."""
    if len(shares) < threshold:
        raise SecAggError(f"{len(shares)} shares, {threshold} needed")
    points = []
    for x, raw in sorted(shares.items())[:threshold]:
        if not isinstance(raw, bytes) or len(raw) != SHARE_BYTES or not 0 < x < PRIME:
            raise SecAggError(f"share of holder {x} is not {SHARE_BYTES} bytes")
        points.append((x, int.from_bytes(raw, "big")))
    secret = 0
    for i, (x_i, y_i) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (x_j, _) in enumerate(points):
            if i != j:
                numerator = numerator * -x_j % PRIME
                denominator = denominator * (x_i - x_j) % PRIME
        secret = (secret + y_i * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * SECRET_BYTES):
        raise SecAggError("the shares do not fit together (a share is wrong)")
    return secret.to_bytes(SECRET_BYTES, "big")
