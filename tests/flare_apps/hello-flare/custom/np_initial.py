import numpy as np
from constants import NPConstants


class InitialWeights:
    """The initial model (given to the persistor as a nested component)."""

    def __init__(self, values, frozen=100.0):
        self.values = values
        self.frozen = frozen

    def weights(self):
        return {
            NPConstants.NUMPY_KEY: np.array(self.values, dtype=np.float32),
            NPConstants.FROZEN_KEY: np.array([self.frozen], dtype=np.float32),
        }
