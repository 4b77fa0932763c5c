"""Kept so that apps written against fl-broker 0.1 import `fl_broker.model` unchanged; new code imports
`fl_broker.fl.model`."""

from __future__ import annotations

from fl_broker.fl.model import FullModelShareableGenerator, ModelLearnable, ShareableGenerator

__all__ = ["FullModelShareableGenerator", "ModelLearnable", "ShareableGenerator"]
