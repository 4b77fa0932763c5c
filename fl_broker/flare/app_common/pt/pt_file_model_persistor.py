"""`...pt.pt_file_model_persistor`: FLARE's PTFileModelPersistor is fl-broker's (fl_broker.pt.persistor), with
FLARE's file names and arguments; `model` (the torch.nn.Module, usually a nested component) is required."""

from __future__ import annotations

from fl_broker.pt.persistor import PTFileModelPersistor

__all__ = ["PTFileModelPersistor"]
