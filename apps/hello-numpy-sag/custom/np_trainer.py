"""hello-numpy-sag's client: "trains" by adding `delta` to every weight, saves what it sent, and reports two
metrics with it: the mean of the weights it sends and the size (L2 norm) of its update."""

from __future__ import annotations

import logging
import time

import numpy as np

from fl_broker import DXO, DataKind, MetaKey, ReturnCode, Shareable, from_shareable
from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.executor import Executor
from fl_broker.wire.messages import make_reply

log = logging.getLogger(__name__)

MODEL_KEY = "numpy_key"


class NPTrainer(Executor):
    """Adds `delta` to the `numpy_key` weights of each `train` task, after `sleep_time` seconds."""

    def __init__(self, delta: float = 1, sleep_time: float = 0, train_task_name: str = "train") -> None:
        self.delta = delta
        self.sleep_time = sleep_time
        self.train_task_name = train_task_name

    def execute(self, task_name: str, shareable: Shareable, context: RunContext, abort_signal: Signal) -> Shareable:
        if task_name != self.train_task_name:
            return make_reply(ReturnCode.TASK_UNKNOWN)
        try:
            dxo = from_shareable(shareable)
        except ValueError:
            log.error("task carries no DXO")
            return make_reply(ReturnCode.BAD_TASK_DATA)
        weights = dxo.data.get(MODEL_KEY)
        if dxo.data_kind != DataKind.WEIGHTS or not isinstance(weights, np.ndarray):
            log.error("expected WEIGHTS with %r, got %s with %s", MODEL_KEY, dxo.data_kind.value, sorted(dxo.data))
            return make_reply(ReturnCode.BAD_TASK_DATA)
        # Sleep in small steps so an abort is seen quickly.
        deadline = time.monotonic() + self.sleep_time
        while time.monotonic() < deadline:
            if abort_signal.wait(min(0.1, deadline - time.monotonic())):
                return make_reply(ReturnCode.TASK_ABORTED)
        if abort_signal.triggered:
            return make_reply(ReturnCode.TASK_ABORTED)
        weights += self.delta  # in place: arrays handed to executors are writable
        update_norm = abs(float(self.delta)) * float(np.sqrt(weights.size))  # the norm of adding delta everywhere
        shown = weights.tolist() if weights.size <= 100 else f"shape {weights.shape}, mean {float(weights.mean()):g}"
        log.info("round %s: new weights %s", shareable.get_header("current_round"), shown)
        self._save(weights, context)
        result = DXO(data_kind=DataKind.WEIGHTS, data={MODEL_KEY: weights})
        result.set_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND, 1)
        result.set_meta_prop(MetaKey.METRICS, {"weight_mean": float(weights.mean()), "update_norm": update_norm})
        return result.to_shareable()

    @staticmethod
    def _save(weights: np.ndarray, context: RunContext) -> None:
        model_dir = context.run_dir / "model"
        model_dir.mkdir(parents=True, exist_ok=True)
        np.save(model_dir / "best_numpy.npy", weights)
