"""Kept so that apps written against fl-broker 0.1 import `fl_broker.executor` unchanged; new code imports
`fl_broker.fl.executor`."""

from __future__ import annotations

from fl_broker.fl.executor import Executor

__all__ = ["Executor"]
