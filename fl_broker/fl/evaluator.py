"""The client side of cross-site evaluation (FLARE's submit_model / validate tasks) as an executor API."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.executor import Executor
from fl_broker.fl.model import ModelLearnable
from fl_broker.wire.messages import DXO, DataKind, ReturnCode, Shareable, make_reply

MODEL_OWNER = "model_owner"  # the header naming whose model a validate task carries


class ModelEvaluator(Executor):
    """Answers `submit_model` with the site's local model and `validate` with the metrics of the model the
    task carries on the site's data; other tasks go to `other_task` (TASK_UNKNOWN unless overridden)."""

    submit_model_task_name = "submit_model"
    validation_task_name = "validate"

    @abstractmethod
    def submit_model(self, context: RunContext, abort_signal: Signal) -> ModelLearnable | None:
        """The site's local model (None: it has none, answered EXECUTION_RESULT_ERROR)."""

    @abstractmethod
    def validate(
        self, model: ModelLearnable, model_owner: str, context: RunContext, abort_signal: Signal
    ) -> dict[str, float]:
        """The metrics (finite numbers) of `model`, owned by `model_owner`, on this site's data."""

    def other_task(self, task_name: str, shareable: Shareable, context: RunContext, abort_signal: Signal) -> Shareable:
        """A task that is not one of cross-site evaluation's."""
        return make_reply(ReturnCode.TASK_UNKNOWN)

    def execute(self, task_name: str, shareable: Shareable, context: RunContext, abort_signal: Signal) -> Shareable:
        if task_name == self.submit_model_task_name:
            model = self.submit_model(context, abort_signal)
            return (
                make_reply(ReturnCode.EXECUTION_RESULT_ERROR)
                if model is None
                else DXO(DataKind.WEIGHTS, model).to_shareable()
            )
        if task_name == self.validation_task_name:
            dxo = shareable.dxo
            if dxo is None or dxo.data_kind != DataKind.WEIGHTS:
                return make_reply(ReturnCode.BAD_TASK_DATA)
            owner: Any = shareable.get_header(MODEL_OWNER, "")
            metrics = self.validate(dxo.data, str(owner), context, abort_signal)
            return DXO(DataKind.METRICS, dict(metrics)).to_shareable()
        return self.other_task(task_name, shareable, context, abort_signal)
