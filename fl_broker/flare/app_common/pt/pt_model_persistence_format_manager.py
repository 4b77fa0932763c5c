"""`...pt.pt_model_persistence_format_manager`: the layout of a PyTorch checkpoint file as FLARE writes it,
`{"model": {name: tensor}, "meta_props": {...}, "train_conf": {...}}` (a bare state dict is read too), and its
conversion to and from a ModelLearnable of numpy arrays. FLARE 2.0 keeps the class in `pt_fed_utils`, which
re-exports it from here."""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import torch

from fl_broker.flare.apis.dxo import MetaKey
from fl_broker.flare.app_common.abstract.model import (
    ModelLearnable,
    ModelLearnableKey,
    make_model_learnable,
    validate_model_learnable,
)
from fl_broker.flare.app_common.app_constant import ModelFormat


class PTModelPersistenceFormatManager:
    """A checkpoint's variables, meta and training config, kept together so a save writes back what a load
    read (keys other than the three known ones included)."""

    PERSISTENCE_KEY_MODEL = "model"
    PERSISTENCE_KEY_TRAIN_CONF = "train_conf"
    PERSISTENCE_KEY_META_PROPS = "meta_props"
    _KNOWN = (PERSISTENCE_KEY_MODEL, PERSISTENCE_KEY_TRAIN_CONF, PERSISTENCE_KEY_META_PROPS)

    def __init__(self, data: dict[str, Any], default_train_conf: dict[str, Any] | None = None) -> None:
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict, got {type(data).__name__}")
        nested = self.PERSISTENCE_KEY_MODEL in data
        self.var_dict: dict[str, Any] = dict(data[self.PERSISTENCE_KEY_MODEL] if nested else data)
        self.meta: dict[str, Any] | None = data.get(self.PERSISTENCE_KEY_META_PROPS) if nested else None
        self.train_conf: Any = (data.get(self.PERSISTENCE_KEY_TRAIN_CONF) if nested else None) or default_train_conf
        self.other_props = {key: value for key, value in data.items() if nested and key not in self._KNOWN}

    def _processed(self) -> dict[str, Any]:
        """Variables a filter changed into something that is not a tensor (left as they are)."""
        found: dict[str, Any] = (self.meta or {}).get(MetaKey.PROCESSED_KEYS, {})
        return found

    def to_model_learnable(self, exclude_vars: re.Pattern[str] | None) -> ModelLearnable:
        """The variables as numpy arrays (those matching `exclude_vars` left out), with the meta."""
        processed = self._processed()
        weights = {
            name: value if processed.get(name) else value.detach().cpu().numpy()
            for name, value in self.var_dict.items()
            if not (exclude_vars and exclude_vars.search(name))
        }
        return make_model_learnable(weights, self.meta)

    def to_persistence_dict(self) -> dict[str, Any]:
        """What to save: the variables as tensors, then the meta, the training config and any other keys."""
        processed = self._processed()
        model = OrderedDict(
            (name, value if processed.get(name) else torch.as_tensor(value)) for name, value in self.var_dict.items()
        )
        saved: dict[str, Any] = OrderedDict({self.PERSISTENCE_KEY_MODEL: model})
        if self.meta:
            saved[self.PERSISTENCE_KEY_META_PROPS] = self.meta
        if self.train_conf:
            saved[self.PERSISTENCE_KEY_TRAIN_CONF] = self.train_conf
        saved.update(self.other_props)
        return saved

    def update(self, ml: ModelLearnable) -> None:
        """Take the learned weights and the meta of `ml`; variables it does not carry keep their values."""
        problem = validate_model_learnable(ml)
        if problem:
            raise ValueError(problem)
        self.meta = ml.get(ModelLearnableKey.META)
        self.var_dict.update(ml.get(ModelLearnableKey.WEIGHTS) or {})

    def get_persist_model_format(self) -> str:
        """FLARE's name of this format."""
        return ModelFormat.PT_CHECKPOINT
