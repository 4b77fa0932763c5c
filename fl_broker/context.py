"""Kept so that apps written against fl-broker 0.1 import `fl_broker.context` unchanged; new code imports
`fl_broker.fl.context`."""

from __future__ import annotations

from fl_broker.fl.context import RunContext, Signal

__all__ = ["RunContext", "Signal"]
