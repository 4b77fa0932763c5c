"""FLARE's PTFileModelPersistor: the global model of a PyTorch app, saved as a `.pt` file in the deployed
app's folder (`run_N/app_server/FL_global_model.pt`, as FLARE does) after every round.

The file holds `{"model": {name: tensor}}` and is read back with `torch.load(weights_only=True)`, which
loads tensors and plain containers only, never arbitrary pickled objects. On the wire the model is
fl-broker's format, a dict of numpy arrays."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch

from fl_broker.errors import ConfigError
from fl_broker.fl.context import RunContext
from fl_broker.fl.model import ModelLearnable
from fl_broker.fl.persistor import ModelPersistor
from fl_broker.pt.components import ComponentSpec, build_component
from fl_broker.pt.state import arrays_of, load_arrays, tensors_of, to_arrays

log = logging.getLogger(__name__)

WHERE = "PTFileModelPersistor.args.model"


class PTFileModelPersistor(ModelPersistor):
    """The global model of a `torch.nn.Module`, with FLARE's arguments: `model` (the module, or
    `{"path": "module.Class", "args": {...}}` resolved against the app's custom/ folder first),
    `global_model_file_name`, `best_global_model_file_name`, `exclude_vars` (a regular expression: matching
    variables are kept on the server and not sent to clients) and `source_ckpt_file_full_name` (a `.pt` file
    to start from instead of the module's initial weights).

    The starting model is, in this order: the saved global model of this run (the server restarted), the
    source checkpoint, the module's own initial weights."""

    def __init__(
        self,
        model: ComponentSpec = None,
        global_model_file_name: str = "FL_global_model.pt",
        best_global_model_file_name: str = "best_FL_global_model.pt",
        exclude_vars: str | None = None,
        source_ckpt_file_full_name: str | None = None,
    ) -> None:
        if model is None:
            raise ConfigError(f"{WHERE}: missing (the torch.nn.Module to persist, e.g. {{'path': 'net.Net'}})")
        for name in (global_model_file_name, best_global_model_file_name):
            if not name or Path(name).name != name:
                raise ConfigError(f"PTFileModelPersistor.args: {name!r} must be a plain file name")
        self.model_spec = model
        self.global_model_file_name = global_model_file_name
        self.best_global_model_file_name = best_global_model_file_name
        self.exclude_vars = exclude_vars
        self.source_ckpt_file_full_name = source_ckpt_file_full_name
        self._module: torch.nn.Module | None = None
        self._state: ModelLearnable | None = None  # the whole model, excluded variables too

    def module(self, context: RunContext) -> torch.nn.Module:
        """The configured module (built on first use, from the deployed app's custom/ folder)."""
        if self._module is None:
            self._module = build_component(self.model_spec, context.app_dir / "custom", torch.nn.Module, WHERE)
        return self._module

    def global_model_path(self, context: RunContext) -> Path:
        """Where the global model is saved every round."""
        return context.app_dir / self.global_model_file_name

    def best_model_path(self, context: RunContext) -> Path:
        """Where save_best_model writes."""
        return context.app_dir / self.best_global_model_file_name

    def load_model(self, context: RunContext) -> ModelLearnable:
        """The model to start from (see the class), without the excluded variables."""
        module = self.module(context)
        saved = self.global_model_path(context)
        if saved.is_file():
            log.info("loading the saved global model %s", saved)
            load_arrays(module, read_model_file(saved))
        elif self.source_ckpt_file_full_name:
            log.info("loading the initial weights from %s", self.source_ckpt_file_full_name)
            load_arrays(module, read_model_file(Path(self.source_ckpt_file_full_name)))
        self._state = to_arrays(module)
        return to_arrays(module, self.exclude_vars)

    def save_model(self, model: ModelLearnable, context: RunContext) -> None:
        """Write the global model (merged into the whole model, so excluded variables are kept)."""
        self._state = self._merged(model, context)
        write_model_file(self._state, self.global_model_path(context))
        log.info("saved the global model to %s", self.global_model_path(context))

    def save_best_model(self, model: ModelLearnable, context: RunContext) -> None:
        """Write `model` as the best global model so far (whoever judges it best calls this)."""
        write_model_file(self._merged(model, context), self.best_model_path(context))
        log.info("saved the best global model to %s", self.best_model_path(context))

    def to_module(self, model: ModelLearnable, context: RunContext) -> torch.nn.Module:
        """A copy of the configured module holding `model`'s weights (e.g. to test the global model)."""
        module = copy.deepcopy(self.module(context))
        load_arrays(module, self._merged(model, context))
        return module

    def _merged(self, model: ModelLearnable, context: RunContext) -> ModelLearnable:
        if self._state is None:  # e.g. a resumed run saves its checkpoint's model before loading any
            self.load_model(context)
        assert self._state is not None
        return {**self._state, **model}


def read_model_file(path: Path) -> dict[str, Any]:
    """The state dict in a `.pt` file: `{"model": state}` (FLARE's layout) or a bare state dict, read with
    weights_only (tensors and plain containers only). ValueError naming the file if it is neither."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for a bad file
        raise ValueError(f"{path}: not a PyTorch weights file: {exc}") from exc
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (or {{'model': state dict}})")
    return arrays_of(state)


def write_model_file(model: ModelLearnable, path: Path) -> None:
    """Save `model` as `{"model": {name: tensor}}`, atomically (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": tensors_of(model)}, tmp)
    tmp.replace(path)
