"""`nvflare.app_common.abstract.shareable_generator`: FLARE's ShareableGenerator, between the global model
(a Learnable) and the Shareables of tasks and aggregated results. The loader wraps one for fl-broker's
workflows; the global model is in the context as AppConstants.GLOBAL_MODEL, as in FLARE."""

from __future__ import annotations

from abc import ABC, abstractmethod

from fl_broker.flare.apis.fl_component import FLComponent
from fl_broker.flare.apis.fl_context import FLContext
from fl_broker.flare.app_common.abstract.learnable import Learnable
from fl_broker.wire.messages import Shareable


class ShareableGenerator(FLComponent, ABC):
    """Makes a task of the global model, and the new global model of an aggregated result."""

    @abstractmethod
    def learnable_to_shareable(self, model: Learnable, fl_ctx: FLContext) -> Shareable:
        """The task payload for `model`."""

    @abstractmethod
    def shareable_to_learnable(self, shareable: Shareable, fl_ctx: FLContext) -> Learnable:
        """The new global model from the aggregated `shareable` and the context's GLOBAL_MODEL."""
