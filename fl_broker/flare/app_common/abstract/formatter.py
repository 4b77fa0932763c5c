"""`nvflare.app_common.abstract.formatter`: turns cross-site evaluation results into text for people."""

from __future__ import annotations

from abc import ABC, abstractmethod

from fl_broker.flare.apis.fl_component import FLComponent
from fl_broker.flare.apis.fl_context import FLContext


class Formatter(FLComponent, ABC):
    """Reads AppConstants.VALIDATION_RESULT from the context (`{data_client: {model: path of the result
    DXO's bytes}}`) and says what it holds."""

    @abstractmethod
    def format(self, fl_ctx: FLContext) -> str:
        """The results as text."""
