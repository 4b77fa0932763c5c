"""`nvflare.apis.executor`: FLARE's Executor, `execute(task_name, shareable, fl_ctx, abort_signal)`. fl-broker's
loader runs one through an adapter that makes the FLContext of each task (fl_broker.apps.flare_adapters)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from fl_broker.fl.context import Signal
from fl_broker.flare.apis.fl_component import FLComponent
from fl_broker.flare.apis.fl_context import FLContext
from fl_broker.wire.messages import Shareable


class Executor(FLComponent, ABC):
    """Runs the tasks a site is configured for; answers with a Shareable (make_reply(rc) on failure)."""

    @abstractmethod
    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        """Do `task_name` on `shareable`; check `abort_signal.triggered` during long work."""
