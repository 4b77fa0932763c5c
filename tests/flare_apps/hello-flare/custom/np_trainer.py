import os

import numpy as np
from constants import NPConstants
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.executor import Executor
from nvflare.apis.fl_constant import FLContextKey, ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal
from nvflare.app_common.app_constant import AppConstants


class NPTrainer(Executor):
    """Answers `train` with a WEIGHT_DIFF of +delta (and +1000 for the frozen array, which the server's
    aggregator leaves out), and `submit_model` with the weights it last trained."""

    def __init__(
        self, delta=1, train_task_name=AppConstants.TASK_TRAIN, submit_model_task_name=AppConstants.TASK_SUBMIT_MODEL
    ):
        super().__init__()
        self._delta = delta
        self._train_task_name = train_task_name
        self._submit_model_task_name = submit_model_task_name

    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        if abort_signal.triggered:
            return make_reply(ReturnCode.TASK_ABORTED)
        if task_name == self._train_task_name:
            return self._train(shareable, fl_ctx)
        if task_name == self._submit_model_task_name:
            weights = self._load_local(fl_ctx)
            if weights is None:
                return make_reply(ReturnCode.EXECUTION_RESULT_ERROR)
            return DXO(data_kind=DataKind.WEIGHTS, data=weights).to_shareable()
        return make_reply(ReturnCode.TASK_UNKNOWN)

    def _train(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        try:
            incoming = from_shareable(shareable)
        except ValueError as e:
            self.system_panic(f"no model in the task: {e}", fl_ctx)
            return make_reply(ReturnCode.BAD_TASK_DATA)
        if incoming.data_kind != DataKind.WEIGHTS or NPConstants.NUMPY_KEY not in incoming.data:
            self.log_error(fl_ctx, "expected WEIGHTS with numpy_key")
            return make_reply(ReturnCode.BAD_TASK_DATA)
        current_round = shareable.get_header(AppConstants.CURRENT_ROUND)
        self.log_info(fl_ctx, f"{fl_ctx.get_identity_name()} trains round {current_round}")
        weights = incoming.data
        diff = {name: np.full_like(value, self._delta) for name, value in weights.items()}
        diff[NPConstants.FROZEN_KEY] = np.full_like(weights[NPConstants.FROZEN_KEY], 1000)
        self._save_local(fl_ctx, {NPConstants.NUMPY_KEY: weights[NPConstants.NUMPY_KEY] + self._delta})
        return DXO(data_kind=DataKind.WEIGHT_DIFF, data=diff, meta={MetaKey.NUM_STEPS_CURRENT_ROUND: 1}).to_shareable()

    def _local_path(self, fl_ctx: FLContext) -> str:
        run_dir = fl_ctx.get_engine().get_workspace().get_run_dir(fl_ctx.get_prop(FLContextKey.CURRENT_RUN))
        return os.path.join(run_dir, "model", "local.npy")

    def _save_local(self, fl_ctx: FLContext, weights: dict) -> None:
        path = self._local_path(fl_ctx)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, weights[NPConstants.NUMPY_KEY])

    def _load_local(self, fl_ctx: FLContext):
        try:
            return {NPConstants.NUMPY_KEY: np.load(self._local_path(fl_ctx))}
        except OSError as e:
            self.log_exception(fl_ctx, f"no local model: {e}")
            return None
