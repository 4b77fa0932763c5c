import os

import numpy as np
from constants import NPConstants
from nvflare.apis.dxo import DXO, DataKind
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.model_locator import ModelLocator


class NPModelLocator(ModelLocator):
    """The server's model "server": the numpy_key array the persistor saved."""

    def get_model_names(self, fl_ctx: FLContext):
        return ["server"]

    def locate_model(self, model_name, fl_ctx: FLContext):
        run_dir = fl_ctx.get_engine().get_workspace().get_run_dir(fl_ctx.get_run_number())
        with np.load(os.path.join(run_dir, "models", "server.npz")) as saved:
            return DXO(data_kind=DataKind.WEIGHTS, data={NPConstants.NUMPY_KEY: saved[NPConstants.NUMPY_KEY]})
