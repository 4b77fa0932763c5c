"""The model persistor API (FLARE's ModelPersistor): where a run's global model comes from and goes to."""

from __future__ import annotations

from abc import ABC, abstractmethod

from fl_broker.fl.context import RunContext
from fl_broker.fl.model import ModelLearnable


class ModelPersistor(ABC):
    """Loads the initial (or last saved) global model and saves it after every round."""

    @abstractmethod
    def load_model(self, context: RunContext) -> ModelLearnable:
        """The model to start from: the last saved one if the run is resumed, else the initial one."""

    @abstractmethod
    def save_model(self, model: ModelLearnable, context: RunContext) -> None:
        """Persist `model`; called once per round, after aggregation."""
