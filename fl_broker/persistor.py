"""Kept so that apps written against fl-broker 0.1 import `fl_broker.persistor` unchanged; new code imports
`fl_broker.fl.persistor`."""

from __future__ import annotations

from fl_broker.fl.persistor import ModelPersistor

__all__ = ["ModelPersistor"]
