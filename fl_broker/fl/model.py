"""The global model (a dict of arrays) and its conversion to and from Shareables (FLARE's generator)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from fl_broker.wire.messages import DXO, DataKind, Shareable, from_shareable

ModelLearnable = dict[str, Any]  # name -> np.ndarray (or scalar); FLARE's ModelLearnable weights


class ShareableGenerator(ABC):
    """Turns the global model into a task and an aggregated result back into the global model."""

    @abstractmethod
    def learnable_to_shareable(self, model: ModelLearnable) -> Shareable:
        """The task payload for a round."""

    @abstractmethod
    def shareable_to_learnable(self, shareable: Shareable, model: ModelLearnable) -> ModelLearnable:
        """The new global model after aggregation."""


class FullModelShareableGenerator(ShareableGenerator):
    """Sends the whole model as WEIGHTS; WEIGHTS results replace it, WEIGHT_DIFF results are added to it."""

    def learnable_to_shareable(self, model: ModelLearnable) -> Shareable:
        return DXO(data_kind=DataKind.WEIGHTS, data=dict(model)).to_shareable()

    def shareable_to_learnable(self, shareable: Shareable, model: ModelLearnable) -> ModelLearnable:
        dxo = from_shareable(shareable)
        if dxo.data_kind == DataKind.WEIGHTS:
            return {**model, **dxo.data}
        if dxo.data_kind == DataKind.WEIGHT_DIFF:
            updated = dict(model)
            for name, diff in dxo.data.items():
                if name not in model:
                    raise ValueError(f"WEIGHT_DIFF names {name!r}, which the global model does not have")
                base = np.asarray(model[name])
                updated[name] = (base + diff).astype(base.dtype, copy=False)
            return updated
        raise ValueError(f"cannot update the model from data kind {dxo.data_kind.value}")
