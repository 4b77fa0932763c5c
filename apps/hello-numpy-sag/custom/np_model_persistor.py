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
    """Starts from [[1,2,3],[4,5,6],[7,8,9]] (float32), or from the saved model when a run resumes."""

    def __init__(self, model_dir: str = "models", model_name: str = "server.npy") -> None:
        self.model_dir = model_dir
        self.model_name = model_name

    def load_model(self, context: RunContext) -> ModelLearnable:
        path = context.run_dir / self.model_dir / self.model_name
        if path.is_file():
            log.info("loading the saved model %s", path)
            return {MODEL_KEY: np.load(path, allow_pickle=False)}
        return {MODEL_KEY: np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)}

    def save_model(self, model: ModelLearnable, context: RunContext) -> None:
        folder = context.run_dir / self.model_dir
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (self.model_name + ".tmp.npy")
        np.save(tmp, np.asarray(model[MODEL_KEY]))
        tmp.replace(folder / self.model_name)  # atomic: a crash never leaves half a model
        log.info("saved the global model to %s", folder / self.model_name)
