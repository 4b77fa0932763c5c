"""An example FedProx trainer (copied into test apps' custom/ folders): gradient descent on the local loss
1/2 ||w - c||^2, c = `target` * the site's number (site-2: 2 * target), plus FedProx's proximal term."""

from __future__ import annotations

import numpy as np

from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.executor import Executor
from fl_broker.fl.fedprox import FedProx, check_mu
from fl_broker.wire.messages import DXO, DataKind, MetaKey, ReturnCode, Shareable, from_shareable, make_reply


class ProxTrainer(Executor):
    """`local_steps` steps of w <- w - lr * ((w - c) + mu * (w - w_global)) on every array of the task."""

    def __init__(self, mu: float = 0.0, lr: float = 0.1, local_steps: int = 2, target: float = 10.0) -> None:
        self.mu = check_mu(mu)  # a negative mu is refused when the app loads, naming the key
        self.lr, self.local_steps, self.target = lr, local_steps, target

    def execute(self, task_name: str, shareable: Shareable, context: RunContext, abort_signal: Signal) -> Shareable:
        try:
            dxo = from_shareable(shareable)
        except ValueError:
            return make_reply(ReturnCode.BAD_TASK_DATA)
        c = self.target * float(context.site_name.rsplit("-", 1)[-1])
        prox = FedProx(dxo.data, mu=self.mu)
        weights = {name: np.array(value, copy=True) for name, value in dxo.data.items()}
        for _ in range(self.local_steps):
            grads = prox.add_to({name: w - c for name, w in weights.items()}, weights)
            weights = {name: (w - self.lr * grads[name]).astype(w.dtype) for name, w in weights.items()}
        result = DXO(DataKind.WEIGHTS, weights)
        result.set_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND, self.local_steps)
        return result.to_shareable()
