"""Server-side optimizers (FedOpt, Reddi et al. 2020, "Adaptive Federated Optimization"; FedAvgM, Hsu et al.
2019): the round's aggregate is turned into a pseudo-gradient and a server optimizer takes one step with it.

Each optimizer is a shareable generator (the `shareable_generator_id` of Scatter-and-Gather), so it works
with the aggregators and persistors there are: tasks carry the whole model, and the aggregate that comes back
(the mean of the sites' WEIGHTS, or of their WEIGHT_DIFFs) gives the update direction

    delta = aggregate - global           (WEIGHTS)        delta = aggregate          (WEIGHT_DIFF)

and, per array, with m and v starting at 0 (as Flower does; the paper allows any v >= tau^2):

    FedAvgM     m = server_momentum * m + delta                     x = x + server_learning_rate * m
    FedAdagrad  m = beta_1 * m + (1 - beta_1) * delta;  v = v + delta^2
    FedAdam     m as FedAdagrad;  v = beta_2 * v + (1 - beta_2) * delta^2
    FedYogi     m as FedAdagrad;  v = v - (1 - beta_2) * delta^2 * sign(v - delta^2)
                (the three adaptive ones)                           x = x + eta * m / (sqrt(v) + tau)

There is no bias correction (the paper's algorithm has none). Arrays that are not floats (counters such as a
batch-norm's num_batches_tracked) are not optimized: they take the aggregate's value. The moments are the
optimizer's state: Scatter-and-Gather commits them with every round's model (checkpoint.Stateful), so a
server restarted mid-run continues with exactly the moments it had.
"""

from __future__ import annotations

import inspect
import logging
import math
from abc import abstractmethod
from typing import Any

import numpy as np

from fl_broker.fl.model import FullModelShareableGenerator, ModelLearnable
from fl_broker.wire.messages import DataKind, Shareable, from_shareable

log = logging.getLogger(__name__)

Moments = dict[str, np.ndarray]


def _check(name: str, value: float, *, low: float = 0.0, high: float = math.inf, open_low: bool = False) -> float:
    """`value` as a float if it is a finite number in [low, high) (or (low, high)); ValueError naming it if not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < low or (open_low and value == low) or value >= high:
        left = "(" if open_low else "["
        right = "1)" if high == 1 else "inf)"
        raise ValueError(f"{name} must be in {left}{low:g}, {right}, got {value!r}")
    return float(value)


class ServerOptimizer(FullModelShareableGenerator):
    """A FullModelShareableGenerator whose model update is one step of a server optimizer (see the module's
    docstring for the maths); subclasses say how a step changes their moments."""

    def __init__(self) -> None:
        self._moments: dict[str, Moments] = {"m": {}, "v": {}}
        self.steps = 0  # how many updates were applied (for the log)

    def shareable_to_learnable(self, shareable: Shareable, model: ModelLearnable) -> ModelLearnable:
        dxo = from_shareable(shareable)
        if dxo.data_kind not in (DataKind.WEIGHTS, DataKind.WEIGHT_DIFF):
            raise ValueError(f"cannot update the model from data kind {dxo.data_kind.value}")
        updated = dict(model)
        moments: dict[str, Moments] = {kind: dict(values) for kind, values in self._moments.items()}
        for name, value in dxo.data.items():
            if name not in model:
                raise ValueError(f"the aggregate names {name!r}, which the global model does not have")
            updated[name] = self._update_one(name, np.asarray(model[name]), np.asarray(value), dxo.data_kind, moments)
        self._moments = moments  # only once every array was updated: a failed step leaves the state as it was
        self.steps += 1
        log.info("%s: step %d applied to %d arrays", type(self).__name__, self.steps, len(dxo.data))
        return updated

    def _update_one(
        self, name: str, x: np.ndarray, value: np.ndarray, kind: DataKind, moments: dict[str, Moments]
    ) -> np.ndarray:
        """The new value of array `name` (its moments in `moments` replaced by new arrays, never changed in
        place: the committed state must not move under a failed step)."""
        if not np.issubdtype(x.dtype, np.floating):
            target = value if kind == DataKind.WEIGHTS else x + value
            return np.asarray(target).astype(x.dtype, copy=False)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below, by name
            delta = (value - x if kind == DataKind.WEIGHTS else value).astype(x.dtype, copy=False)
            new = (x + self._step(name, delta, moments)).astype(x.dtype, copy=False)
        if not np.isfinite(new).all():
            raise ValueError(f"{type(self).__name__}'s step would make {name!r} NaN or Inf")
        return new

    @abstractmethod
    def _step(self, name: str, delta: np.ndarray, moments: dict[str, Moments]) -> np.ndarray:
        """What to add to array `name` for update direction `delta`; store its new moments in `moments`."""

    def state_dict(self) -> dict[str, Any]:
        """The moments (name -> array) and the step count, for the checkpoint."""
        return {"steps": self.steps, **{kind: dict(values) for kind, values in self._moments.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a committed `state_dict()`; ValueError if it is not one."""
        steps = state.get("steps")
        if type(steps) is not int or not all(isinstance(state.get(kind), dict) for kind in self._moments):
            raise ValueError(f"not a {type(self).__name__} state: {sorted(state)}")
        self.steps = steps
        self._moments = {kind: {n: np.array(a) for n, a in state[kind].items()} for kind in self._moments}


def _zeros_like(moments: Moments, name: str, delta: np.ndarray) -> np.ndarray:
    """The moment of `name` so far, or zeros for its first step (or after its shape changed)."""
    previous = moments.get(name)
    return previous if previous is not None and previous.shape == delta.shape else np.zeros_like(delta)


class FedAvgM(ServerOptimizer):
    """FedAvg with server momentum (Hsu et al. 2019), with Flower's argument names: `server_learning_rate`
    (1.0) and `server_momentum` (0.0; 0 with learning rate 1 is plain FedAvg)."""

    def __init__(self, *, server_learning_rate: float = 1.0, server_momentum: float = 0.0) -> None:
        super().__init__()
        self.server_learning_rate = _check("server_learning_rate", server_learning_rate, open_low=True)
        self.server_momentum = _check("server_momentum", server_momentum, high=1)

    def _step(self, name: str, delta: np.ndarray, moments: dict[str, Moments]) -> np.ndarray:
        m = self.server_momentum * _zeros_like(moments["m"], name, delta) + delta
        moments["m"][name] = m.astype(delta.dtype, copy=False)
        return self.server_learning_rate * moments["m"][name]


class _Adaptive(ServerOptimizer):
    """The adaptive optimizers of Reddi et al.: a first moment m, a second moment v, and the step
    eta * m / (sqrt(v) + tau). Subclasses say how v changes."""

    def __init__(self, *, eta: float, beta_1: float, beta_2: float, tau: float) -> None:
        super().__init__()
        self.eta = _check("eta", eta, open_low=True)
        self.beta_1 = _check("beta_1", beta_1, high=1)
        self.beta_2 = _check("beta_2", beta_2, high=1)
        self.tau = _check("tau", tau, open_low=True)

    def _step(self, name: str, delta: np.ndarray, moments: dict[str, Moments]) -> np.ndarray:
        m = self.beta_1 * _zeros_like(moments["m"], name, delta) + (1 - self.beta_1) * delta
        v = self._second_moment(_zeros_like(moments["v"], name, delta), delta * delta)
        moments["m"][name] = m.astype(delta.dtype, copy=False)
        moments["v"][name] = v.astype(delta.dtype, copy=False)
        return self.eta * moments["m"][name] / (np.sqrt(moments["v"][name]) + self.tau)

    @abstractmethod
    def _second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        """The new v from the old one and delta^2."""


class FedAdagrad(_Adaptive):
    """FedAdagrad (Reddi et al.), with Flower's argument names: `eta` (0.1), `beta_1` (0.0: m = delta),
    `tau` (1e-9); there is no `beta_2` (v is the running sum of delta^2)."""

    def __init__(self, *, eta: float = 0.1, beta_1: float = 0.0, tau: float = 1e-9) -> None:
        super().__init__(eta=eta, beta_1=beta_1, beta_2=0.0, tau=tau)

    def _second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        return v + squared


class FedAdam(_Adaptive):
    """FedAdam (Reddi et al.), with Flower's argument names and defaults: `eta` (0.1), `beta_1` (0.9),
    `beta_2` (0.99), `tau` (1e-3)."""

    def __init__(self, *, eta: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3) -> None:
        super().__init__(eta=eta, beta_1=beta_1, beta_2=beta_2, tau=tau)

    def _second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        return self.beta_2 * v + (1 - self.beta_2) * squared


class FedYogi(_Adaptive):
    """FedYogi (Reddi et al.), with Flower's argument names and defaults: `eta` (0.01), `beta_1` (0.9),
    `beta_2` (0.99), `tau` (1e-3)."""

    def __init__(self, *, eta: float = 0.01, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3) -> None:
        super().__init__(eta=eta, beta_1=beta_1, beta_2=beta_2, tau=tau)

    def _second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        return v - (1 - self.beta_2) * squared * np.sign(v - squared)


OPTIMIZERS: dict[str, type[ServerOptimizer]] = {
    "fedavgm": FedAvgM,
    "fedadagrad": FedAdagrad,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
}


class FedOptShareableGenerator(FullModelShareableGenerator):
    """The server optimizer named by `optimizer` (fedavgm, fedadagrad, fedadam, fedyogi; any case), built
    with `optimizer_args` (that optimizer's own keys, e.g. {"eta": 0.05}): one component path for all."""

    def __init__(self, *, optimizer: str = "fedadam", optimizer_args: dict[str, Any] | None = None) -> None:
        cls = OPTIMIZERS.get(optimizer.lower()) if isinstance(optimizer, str) else None
        if cls is None:
            raise ValueError(f"optimizer: unknown {optimizer!r} (known: {', '.join(OPTIMIZERS)})")
        try:
            self.inner = cls(**dict(optimizer_args or {}))
        except TypeError as exc:  # a key the optimizer does not take
            raise ValueError(f"optimizer_args: {exc} ({cls.__name__} takes {_keys(cls)})") from exc
        except ValueError as exc:
            raise ValueError(f"optimizer_args.{exc}") from exc

    def shareable_to_learnable(self, shareable: Shareable, model: ModelLearnable) -> ModelLearnable:
        return self.inner.shareable_to_learnable(shareable, model)

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state (see ServerOptimizer.state_dict)."""
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the optimizer from a committed state."""
        self.inner.load_state_dict(state)


def _keys(cls: type) -> str:
    """The keyword arguments `cls` takes, for an error message."""
    return ", ".join(inspect.signature(cls).parameters)
