"""hello-pt's client: trains the CNN on the site's shard of the digits data for `train` tasks, returning the
new weights with the round's local validation metrics; answers cross-site evaluation's `submit_model` and
`validate` tasks with the site's last trained model and a model's metrics on the site's validation images.

The model and the data come from the config, as `{"path": ..., "args": ...}` components resolved against
this app's custom/ folder, so this file imports neither."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from fl_broker import DXO, DataKind, MetaKey, ReturnCode, Shareable
from fl_broker.errors import ConfigError
from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.evaluator import ModelEvaluator
from fl_broker.fl.model import ModelLearnable
from fl_broker.pt.classifier import evaluate, train_epochs
from fl_broker.pt.components import ComponentSpec, build_component
from fl_broker.pt.persistor import read_model_file, write_model_file
from fl_broker.pt.state import load_arrays, to_arrays
from fl_broker.wire.messages import Header, make_reply

log = logging.getLogger(__name__)

LOCAL_MODEL = "local_model.pt"  # under run_N/model/: what the site last trained, for submit_model


class ModelMismatch(ValueError):
    """A model to validate whose variables do not fit the site's network."""


class DigitsLearner(ModelEvaluator):
    """`epochs` local epochs of SGD (`lr`, `momentum`, `batch_size`) per round from the global weights; the
    result is WEIGHTS weighted by the number of training images, with METRICS in its meta: `loss`,
    `accuracy`, `samples` (of the trained model on the local validation images), `train_loss`,
    `train_samples`, and `global_loss`, `global_accuracy` (the received global model, before training).
    `num_threads` caps torch's threads (0: torch's default); several sites share one machine here."""

    def __init__(
        self,
        model: ComponentSpec = None,
        dataset: ComponentSpec = None,
        epochs: int = 2,
        lr: float = 0.05,
        momentum: float = 0.9,
        batch_size: int = 32,
        seed: int = 0,
        num_threads: int = 1,
        train_task_name: str = "train",
    ) -> None:
        if model is None or dataset is None:
            raise ValueError("model and dataset are required (e.g. {'path': 'digits_net.DigitsNet'})")
        if epochs < 1 or batch_size < 1 or lr <= 0:
            raise ValueError("need epochs >= 1, batch_size >= 1 and lr > 0")
        self.model_spec, self.dataset_spec = model, dataset
        self.epochs, self.lr, self.momentum, self.batch_size = epochs, lr, momentum, batch_size
        self.seed, self.num_threads, self.train_task_name = seed, num_threads, train_task_name
        self._net: torch.nn.Module | None = None
        self._data: Any = None

    def _setup(self, context: RunContext) -> tuple[torch.nn.Module, Any]:
        """The network and this site's data, built on the first task (from the deployed app's custom/);
        ConfigError or ValueError (e.g. a site the split has no shard for) leaves nothing half built."""
        if self._net is None:
            if self.num_threads:
                torch.set_num_threads(self.num_threads)
            custom = context.app_dir / "custom"
            net = build_component(self.model_spec, custom, torch.nn.Module, "DigitsLearner.args.model")
            dataset: Any = build_component(self.dataset_spec, custom, object, "DigitsLearner.args.dataset")
            data = dataset.site(context.site_name)
            log.info(
                "%s: %d training, %d validation images; per digit %s",
                context.site_name,
                len(data.train_y),
                len(data.val_y),
                dataset.label_counts(context.site_name),
            )
            self._net, self._data = net, data
        return self._net, self._data

    def execute(self, task_name: str, shareable: Shareable, context: RunContext, abort_signal: Signal) -> Shareable:
        """Cross-site evaluation's tasks and `train`; a site that cannot build its network or data, or a
        model to validate that does not fit the network, is answered with a return code and one log line."""
        if task_name in (self.train_task_name, self.validation_task_name):
            try:
                self._setup(context)
            except (ConfigError, ValueError) as exc:
                log.error("cannot run %s: %s", task_name, exc)
                return make_reply(ReturnCode.EXECUTION_EXCEPTION)
        try:
            return super().execute(task_name, shareable, context, abort_signal)
        except ModelMismatch as exc:
            log.error("cannot validate that model: %s", exc)
            return make_reply(ReturnCode.BAD_TASK_DATA)

    def other_task(self, task_name: str, shareable: Shareable, context: RunContext, abort_signal: Signal) -> Shareable:
        if task_name != self.train_task_name:
            return make_reply(ReturnCode.TASK_UNKNOWN)
        dxo = shareable.dxo
        if dxo is None or dxo.data_kind != DataKind.WEIGHTS:
            log.error("a train task must carry WEIGHTS, got %s", "nothing" if dxo is None else dxo.data_kind.value)
            return make_reply(ReturnCode.BAD_TASK_DATA)
        net, data = self._setup(context)  # built by execute already
        try:
            load_arrays(net, dxo.data)
        except ValueError as exc:
            log.error("the global model does not fit this site's network: %s", exc)
            return make_reply(ReturnCode.BAD_TASK_DATA)
        current = shareable.get_header(Header.CURRENT_ROUND, 0)
        return self._train(net, data, int(current or 0), context, abort_signal)

    def _train(self, net: torch.nn.Module, data: Any, current: int, context: RunContext, abort: Signal) -> Shareable:
        before = evaluate(net, data.val_x, data.val_y)
        seed = self.seed * 1_000_003 + current  # a different but reproducible order every round
        train_loss = train_epochs(
            net,
            data.train_x,
            data.train_y,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            momentum=self.momentum,
            seed=seed,
            abort_signal=abort,
        )
        if train_loss is None:
            return make_reply(ReturnCode.TASK_ABORTED)
        weights = to_arrays(net)
        write_model_file(weights, context.run_dir / "model" / LOCAL_MODEL)
        metrics = evaluate(net, data.val_x, data.val_y)
        metrics.update(train_loss=train_loss, train_samples=float(len(data.train_y)))
        metrics.update(global_loss=before["loss"], global_accuracy=before["accuracy"])
        log.info(
            "round %d: validation accuracy %.4f (global model before training %.4f), loss %.4f",
            current,
            metrics["accuracy"],
            before["accuracy"],
            metrics["loss"],
        )
        result = DXO(data_kind=DataKind.WEIGHTS, data=weights)
        result.set_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND, len(data.train_y))
        result.set_meta_prop(MetaKey.METRICS, metrics)
        return result.to_shareable()

    def submit_model(self, context: RunContext, abort_signal: Signal) -> ModelLearnable | None:
        path = context.run_dir / "model" / LOCAL_MODEL
        if not path.is_file():
            log.error("no local model to submit: %s does not exist (this site trained no round)", path)
            return None
        return read_model_file(path)

    def validate(
        self, model: ModelLearnable, model_owner: str, context: RunContext, abort_signal: Signal
    ) -> dict[str, float]:
        net, data = self._setup(context)
        try:
            load_arrays(net, {name: np.asarray(value) for name, value in model.items()})
        except ValueError as exc:
            raise ModelMismatch(f"the model of {model_owner} does not fit this site's network: {exc}") from exc
        metrics = evaluate(net, data.val_x, data.val_y)
        log.info(
            "validated the model of %s: accuracy %.4f, loss %.4f", model_owner, metrics["accuracy"], metrics["loss"]
        )
        return metrics
