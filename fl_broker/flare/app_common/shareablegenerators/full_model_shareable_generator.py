"""`...shareablegenerators.full_model_shareable_generator`: FLARE's FullModelShareableGenerator is fl-broker's
(the whole model out as WEIGHTS; WEIGHTS results replace it, WEIGHT_DIFF results are added to it)."""

from __future__ import annotations

from fl_broker.fl import model
from fl_broker.flare.apis.fl_component import FLComponent


class FullModelShareableGenerator(model.FullModelShareableGenerator, FLComponent):
    """Between the global model and the Shareables of Scatter-and-Gather."""
