"""`nvflare.apis.signal`: the abort flag is fl-broker's Signal (trigger, triggered, value, reset)."""

from __future__ import annotations

from fl_broker.fl.context import Signal

__all__ = ["Signal"]
