"""Secure aggregation over the broker (SecAgg-style pairwise masks with secret-shared dropout recovery):
`SecureScatterAndGather` on the server, `SecureTrainer` on the sites. Needs the `secagg` extra
(cryptography); without it the constructors fail with one line saying how to install it."""

from __future__ import annotations

from fl_broker.secagg.client import SecureTrainer
from fl_broker.secagg.workflow import SecureScatterAndGather

__all__ = ["SecureScatterAndGather", "SecureTrainer"]
