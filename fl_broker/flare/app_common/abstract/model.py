"""`nvflare.app_common.abstract.model`: the ModelLearnable, `{"weights": {...}, "meta": {...}}`, FLARE's model
format. fl-broker's workflows work on the weights dict; the loader's persistor adapter converts between the
two (fl_broker.apps.flare_adapters)."""

from __future__ import annotations

from typing import Any

from fl_broker.flare.app_common.abstract.learnable import Learnable
from fl_broker.wire.messages import DXO, DataKind


class ModelLearnableKey:
    """The two keys of a ModelLearnable."""

    WEIGHTS = "weights"
    META = "meta"


class ModelLearnable(Learnable):
    """A model: its weights (name -> array) and meta."""

    def is_empty(self) -> bool:
        """True when it has no weights."""
        return not self.get(ModelLearnableKey.WEIGHTS)


def validate_model_learnable(model_learnable: Any) -> str:
    """What is wrong with `model_learnable` as a ModelLearnable ("" when nothing is)."""
    if not isinstance(model_learnable, ModelLearnable):
        return f"invalid model learnable: expected a ModelLearnable, got {type(model_learnable).__name__}"
    for key in (ModelLearnableKey.WEIGHTS, ModelLearnableKey.META):
        if key not in model_learnable:
            return f"invalid model learnable: missing {key}"
    return ""


def make_model_learnable(weights: Any, meta_props: Any) -> ModelLearnable:
    """A ModelLearnable of `weights` and `meta_props`."""
    learnable = ModelLearnable()
    learnable[ModelLearnableKey.WEIGHTS] = weights
    learnable[ModelLearnableKey.META] = meta_props
    return learnable


def model_learnable_to_dxo(ml: ModelLearnable) -> DXO:
    """A WEIGHTS DXO of the model's weights and meta; ValueError if `ml` is not a valid ModelLearnable."""
    problem = validate_model_learnable(ml)
    if problem:
        raise ValueError(problem)
    return DXO(data_kind=DataKind.WEIGHTS, data=ml[ModelLearnableKey.WEIGHTS], meta=ml[ModelLearnableKey.META])
