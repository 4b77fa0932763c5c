"""`nvflare.app_common.abstract.learnable_persistor`: loads and saves a Learnable."""

from __future__ import annotations

from abc import ABC, abstractmethod

from fl_broker.flare.apis.fl_component import FLComponent
from fl_broker.flare.apis.fl_context import FLContext
from fl_broker.flare.app_common.abstract.learnable import Learnable


class LearnablePersistor(FLComponent, ABC):
    """Where a learnable comes from at the start of a run, and goes to as it changes."""

    @abstractmethod
    def load(self, fl_ctx: FLContext) -> Learnable:
        """The learnable to start from."""

    @abstractmethod
    def save(self, learnable: Learnable, fl_ctx: FLContext) -> None:
        """Keep `learnable`."""
