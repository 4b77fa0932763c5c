"""hello-numpy-sag's persistor: the initial 3x3 model, saved to models/server.npy every round."""

from __future__ import annotations

import logging

import numpy as np

from fl_broker.fl.context import RunContext
from fl_broker.fl.model import ModelLearnable
from fl_broker.fl.persistor import ModelPersistor

log = logging.getLogger(__name__)

MODEL_KEY = "numpy_key"


class NPModelPersistor(ModelPersistor):
    """Starts from [[1,2,3],[4,5,6],[7,8,9]] (float32), or from the saved model when a run resumes.

    `size` (for scale tests and benchmarks) starts from a float32 vector of that many weights instead,
    0, 1, ..., 250, 0, 1, ...: values that differ along the vector, so a misplaced chunk shows."""

    def __init__(self, model_dir: str = "models", model_name: str = "server.npy", size: int = 0) -> None:
        self.model_dir = model_dir
        self.model_name = model_name
        self.size = size

    def load_model(self, context: RunContext) -> ModelLearnable:
        path = context.run_dir / self.model_dir / self.model_name
        if path.is_file():
            log.info("loading the saved model %s", path)
            return {MODEL_KEY: np.load(path, allow_pickle=False)}
        if self.size:
            return {MODEL_KEY: initial_vector(self.size)}
        return {MODEL_KEY: np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)}

    def save_model(self, model: ModelLearnable, context: RunContext) -> None:
        folder = context.run_dir / self.model_dir
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (self.model_name + ".tmp.npy")
        np.save(tmp, np.asarray(model[MODEL_KEY]))
        tmp.replace(folder / self.model_name)  # atomic: a crash never leaves half a model
        log.info("saved the global model to %s", folder / self.model_name)


def initial_vector(size: int) -> np.ndarray:
    """The initial model of `size` weights."""
    return (np.arange(size) % 251).astype(np.float32)
