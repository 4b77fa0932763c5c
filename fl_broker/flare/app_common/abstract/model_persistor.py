"""`nvflare.app_common.abstract.model_persistor`: FLARE's ModelPersistor (load_model / save_model of a
ModelLearnable). fl-broker's loader wraps one so its workflows can use it (fl_broker.apps.flare_adapters):
load_model is called once the start round is decided, with AppConstants.START_ROUND in the context."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from fl_broker.flare.apis.fl_context import FLContext
from fl_broker.flare.app_common.abstract.learnable import Learnable
from fl_broker.flare.app_common.abstract.learnable_persistor import LearnablePersistor
from fl_broker.flare.app_common.abstract.model import ModelLearnable


class ModelPersistor(LearnablePersistor, ABC):
    """Loads the global model at the start of a run and saves it after every round."""

    def load(self, fl_ctx: FLContext) -> Learnable:
        """The model to start from (load_model)."""
        return self.load_model(fl_ctx)

    def save(self, learnable: Learnable, fl_ctx: FLContext) -> None:
        """Keep the model (save_model)."""
        if not isinstance(learnable, ModelLearnable):
            learnable = ModelLearnable(learnable)
        self.save_model(learnable, fl_ctx)

    @abstractmethod
    def load_model(self, fl_ctx: FLContext) -> ModelLearnable:
        """The initial model, or the saved one when the context's start round is > 0."""

    @abstractmethod
    def save_model(self, model: ModelLearnable, fl_ctx: FLContext) -> None:
        """Persist `model`."""

    def get_model_inventory(self, fl_ctx: FLContext) -> dict[str, Any]:
        """The models this persistor keeps, by name (none unless overridden)."""
        return {}

    def get_model(self, model_file: str, fl_ctx: FLContext) -> Any:
        """One model of the inventory (None unless overridden)."""
        return None
