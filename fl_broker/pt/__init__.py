"""PyTorch support, the optional `pt` extra (`pip install 'fl-broker[pt]'`): modules in fl-broker's model
format (a dict of numpy arrays) and a file persistor for PyTorch models. Importing any module of this
package imports torch; nothing else in fl-broker imports it."""

from __future__ import annotations

try:
    import torch  # noqa: F401  (here, so that a missing extra is reported in words a user can act on)
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(
        f"fl_broker.pt needs PyTorch, which is not installed ({exc}): pip install 'fl-broker[pt]'", name="torch"
    ) from exc
