import os

import numpy as np
from constants import NPConstants
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_constant import FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.model import ModelLearnable, ModelLearnableKey, make_model_learnable
from nvflare.app_common.abstract.model_persistor import ModelPersistor
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.app_event_type import AppEventType

RECORDED = (
    EventType.START_RUN,
    AppEventType.INITIAL_MODEL_LOADED,
    AppEventType.ROUND_STARTED,
    AppEventType.ROUND_DONE,
    AppEventType.CROSS_VAL_INIT,
    EventType.END_RUN,
)


class NPModelPersistor(ModelPersistor):
    """Saves both arrays in models/server.npz; reads them back only when the start round is > 0."""

    def __init__(self, initial, model_dir="models", model_name="server.npz"):
        super().__init__()
        self.initial = initial
        self.model_dir = model_dir
        self.model_name = model_name

    def _run_dir(self, fl_ctx: FLContext) -> str:
        run_number = fl_ctx.get_prop(FLContextKey.CURRENT_RUN)
        return fl_ctx.get_engine().get_workspace().get_run_dir(run_number)

    def _record(self, fl_ctx: FLContext, line: str) -> None:
        with open(os.path.join(self._run_dir(fl_ctx), NPConstants.EVENTS_FILE), "a") as events:
            events.write(line + "\n")

    def load_model(self, fl_ctx: FLContext) -> ModelLearnable:
        start_round = fl_ctx.get_prop(AppConstants.START_ROUND, 0)
        path = os.path.join(self._run_dir(fl_ctx), self.model_dir, self.model_name)
        if start_round > 0 and os.path.exists(path):
            with np.load(path) as saved:
                weights = {name: saved[name] for name in saved.files}
            source = "saved"
        else:
            weights = self.initial.weights()
            source = "initial"
        self._record(fl_ctx, f"load start_round={start_round} {source}")
        self.log_info(fl_ctx, f"loaded the {source} model")
        return make_model_learnable(weights, {"source": source})

    def save_model(self, model: ModelLearnable, fl_ctx: FLContext):
        if not isinstance(model, ModelLearnable):
            self.system_panic(f"expected a ModelLearnable, got {type(model)}", fl_ctx)
            return
        folder = os.path.join(self._run_dir(fl_ctx), self.model_dir)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, "tmp_" + self.model_name)
        np.savez(tmp, **model[ModelLearnableKey.WEIGHTS])
        os.replace(tmp, os.path.join(folder, self.model_name))
        self._record(fl_ctx, f"save meta={model[ModelLearnableKey.META]}")

    def handle_event(self, event_type: str, fl_ctx: FLContext):
        if event_type in RECORDED:
            self._record(fl_ctx, f"{event_type} round={fl_ctx.get_prop(AppConstants.CURRENT_ROUND)}")
