import numpy as np
from constants import NPConstants
from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.executor import Executor
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal
from nvflare.app_common.app_constant import AppConstants


class NPValidator(Executor):
    """The sum of the numpy_key weights of the model it is sent."""

    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        if task_name != AppConstants.TASK_VALIDATION:
            return make_reply(ReturnCode.TASK_UNKNOWN)
        model = from_shareable(shareable)
        if model.data_kind != DataKind.WEIGHTS:
            return make_reply(ReturnCode.BAD_TASK_DATA)
        owner = shareable.get_header(AppConstants.MODEL_OWNER, "?")
        self.log_info(fl_ctx, f"validating the model of {owner}")
        metrics = {"weight_sum": float(np.sum(model.data[NPConstants.NUMPY_KEY]))}
        return DXO(data_kind=DataKind.METRICS, data=metrics).to_shareable()
