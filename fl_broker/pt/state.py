"""A PyTorch module's state in fl-broker's model format: a dict of numpy arrays (name -> array), which the
codec sends as dtype + shape + bytes. Tensors never travel pickled."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from fl_broker.fl.model import ModelLearnable


def to_arrays(module: torch.nn.Module, exclude_vars: str | None = None) -> dict[str, np.ndarray]:
    """The module's state dict as numpy arrays (copies, so later training does not change them); names
    matching the regular expression `exclude_vars` are left out."""
    pattern = re.compile(exclude_vars) if exclude_vars else None
    arrays = {}
    for name, tensor in module.state_dict().items():
        if pattern is not None and pattern.search(name):
            continue
        arrays[name] = tensor_to_array(name, tensor)
    return arrays


def tensor_to_array(name: str, tensor: torch.Tensor) -> np.ndarray:
    """One tensor as a numpy array of the same dtype; ValueError naming it if numpy has no such dtype."""
    if tensor.dtype == torch.bfloat16:
        raise ValueError(f"{name!r} is a bfloat16 tensor, which has no numpy dtype: convert the model to float32")
    return np.array(tensor.detach().cpu().numpy(), copy=True)


def load_arrays(module: torch.nn.Module, model: ModelLearnable, *, partial: bool = False) -> None:
    """Copy `model`'s arrays into the module's parameters and buffers, in place. ValueError naming the key
    if a name is unknown, a shape differs, a value is not numeric or (unless `partial`) a name is missing."""
    state = module.state_dict()
    unknown = sorted(set(model) - set(state))
    if unknown:
        raise ValueError(f"the model has no variables {unknown} (it has {len(state)}, e.g. {next(iter(state), '')!r})")
    missing = sorted(set(state) - set(model))
    if missing and not partial:
        raise ValueError(f"variables {missing} are missing")
    updates = {name: _checked(name, value, state[name]) for name, value in model.items()}
    module.load_state_dict({**state, **updates})


def _checked(name: str, value: Any, current: torch.Tensor) -> torch.Tensor:
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"{name!r} is not numeric (dtype {array.dtype})")
    if tuple(array.shape) != tuple(current.shape):
        raise ValueError(f"{name!r} has shape {tuple(array.shape)}, the model's is {tuple(current.shape)}")
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype=current.dtype)


def arrays_of(state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A saved state dict (name -> tensor) as numpy arrays."""
    return {name: tensor_to_array(name, tensor) for name, tensor in state.items()}


def tensors_of(model: ModelLearnable) -> dict[str, torch.Tensor]:
    """Numpy arrays as tensors, for torch.save (copies: the file never aliases a live model)."""
    return {name: torch.from_numpy(np.array(value, copy=True)) for name, value in model.items()}
