"""`nvflare.app_common.abstract.model_locator`: names the server's models for cross-site evaluation and
finds each one as a DXO."""

from __future__ import annotations

from abc import ABC, abstractmethod

from fl_broker.flare.apis.fl_component import FLComponent
from fl_broker.flare.apis.fl_context import FLContext
from fl_broker.wire.messages import DXO


class ModelLocator(FLComponent, ABC):
    """The server-side models CrossSiteModelEval sends out (each as `SRV_<name>`)."""

    @abstractmethod
    def get_model_names(self, fl_ctx: FLContext) -> list[str]:
        """The names of the models there are."""

    @abstractmethod
    def locate_model(self, model_name: str, fl_ctx: FLContext) -> DXO | None:
        """The model called `model_name` (a WEIGHTS DXO), or None if it cannot be found."""
