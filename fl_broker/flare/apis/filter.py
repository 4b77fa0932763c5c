"""`nvflare.apis.filter`: FLARE's Filter base, `process(shareable, fl_ctx) -> Shareable`. fl-broker's filter
chains (fl_broker.fl.filters) call it with their FilterContext as `fl_ctx` (the participant, run, task and
peer; not a property bag)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from fl_broker.flare.apis.fl_component import FLComponent
from fl_broker.wire.messages import Shareable


class Filter(FLComponent, ABC):
    """Changes a task or a result on its way (task_data_filters / task_result_filters)."""

    @abstractmethod
    def process(self, shareable: Shareable, fl_ctx: Any) -> Shareable:
        """The Shareable to pass on."""
