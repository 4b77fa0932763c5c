"""The executor API that an app's client code implements (FLARE's Executor)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from fl_broker.fl.context import RunContext, Signal
from fl_broker.wire.messages import Shareable


class Executor(ABC):
    """Runs the tasks a client is configured for. Return a result Shareable; never raise on bad input:
    answer with a ReturnCode instead (an exception is reported as EXECUTION_EXCEPTION)."""

    @abstractmethod
    def execute(self, task_name: str, shareable: Shareable, context: RunContext, abort_signal: Signal) -> Shareable:
        """Do `task_name` on `shareable`; check `abort_signal.triggered` during long work."""
