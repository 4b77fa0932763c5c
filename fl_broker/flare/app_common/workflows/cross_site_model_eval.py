"""`...workflows.cross_site_model_eval`: FLARE's CrossSiteModelEval on fl-broker's, with FLARE 2.0's arguments:
the server's models come from the ModelLocator named by `model_locator_id` (each as `SRV_<name>`; none without
a locator), each result DXO is kept as bytes in `<cross_val_dir>/result_shareables/<site>_<model>` (and each
server model in `model_shareables/`, removed at the end with `cleanup_models`), and the Formatter named by
`formatter_id` is given AppConstants.VALIDATION_RESULT (`{site: {model: file}}`) and its text is logged.
The matrix is also saved as cross_val_results.json, as fl-broker's workflow does."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

from fl_broker.fl import cross_site_eval
from fl_broker.fl.persistor import ModelPersistor
from fl_broker.fl.workflow import ComponentArg, WorkflowRuntime
from fl_broker.flare.apis.fl_component import FLComponent
from fl_broker.flare.app_common.abstract.formatter import Formatter
from fl_broker.flare.app_common.abstract.model_locator import ModelLocator
from fl_broker.flare.app_common.app_constant import AppConstants
from fl_broker.flare.runtime import FlareEngine
from fl_broker.wire.messages import DXO, DataKind

log = logging.getLogger(__name__)


class CrossSiteModelEval(cross_site_eval.CrossSiteModelEval, FLComponent):
    """Cross-site evaluation with FLARE's arguments (model_locator_id, formatter_id, cleanup_models, and
    fl-broker's CrossSiteModelEval's); fl-broker's optional `persistor_id` gives the global model when there is
    no locator."""

    component_args: ClassVar[tuple[ComponentArg, ...]] = (
        ComponentArg("model_locator_id", "model_locator", ModelLocator, ""),
        ComponentArg("formatter_id", "formatter", Formatter, ""),
        ComponentArg("persistor_id", "persistor", ModelPersistor, ""),
    )

    def __init__(
        self,
        *,
        model_locator: ModelLocator | None = None,
        formatter: Formatter | None = None,
        persistor: ModelPersistor | None = None,
        cross_val_dir: str = AppConstants.CROSS_VAL_DIR,
        submit_model_timeout: float = 600,
        validation_timeout: float = 6000,
        submit_model_task_name: str = AppConstants.TASK_SUBMIT_MODEL,
        validation_task_name: str = AppConstants.TASK_VALIDATION,
        cleanup_models: bool = False,
        participating_clients: list[str] | None = None,
        wait_for_clients_timeout: float = 300,
    ) -> None:
        super().__init__(
            persistor=persistor,
            cross_val_dir=cross_val_dir,
            submit_model_timeout=submit_model_timeout,
            validation_timeout=validation_timeout,
            submit_model_task_name=submit_model_task_name,
            validation_task_name=validation_task_name,
            participating_clients=participating_clients,
            wait_for_clients_timeout=wait_for_clients_timeout,
        )
        self.model_locator = model_locator
        self.formatter = formatter
        self.cleanup_models = cleanup_models
        self.engine = FlareEngine()

    def bind_engine(self, engine: FlareEngine) -> None:
        """The app's FLARE engine (the locator and formatter are called with its contexts)."""
        self.engine = engine

    def _server_models(self, runtime: WorkflowRuntime) -> dict[str, DXO]:
        if self.model_locator is None:
            if self.persistor is None:
                log.info("no model_locator_id: no server model is evaluated")
                return {}
            return super()._server_models(runtime)
        ctx = self.engine.new_context(runtime.context)
        models: dict[str, DXO] = {}
        for name in self.model_locator.get_model_names(ctx):
            dxo = self.model_locator.locate_model(name, ctx)
            if not isinstance(dxo, DXO) or dxo.data_kind != DataKind.WEIGHTS:
                log.warning("the model locator gave no WEIGHTS DXO for %r: it is not evaluated", name)
                continue
            models[f"SRV_{name}"] = dxo
            _write(self._folder(runtime, AppConstants.CROSS_VAL_MODEL_DIR_NAME) / f"SRV_{name}", dxo)
        return models

    def _save(self, runtime: WorkflowRuntime, matrix: dict[str, dict[str, cross_site_eval.Metrics]]) -> Path:
        path = super()._save(runtime, matrix)
        folder = self._folder(runtime, AppConstants.CROSS_VAL_RESULTS_DIR_NAME)
        files: dict[str, dict[str, str]] = {site: {} for site in matrix}
        for site, row in matrix.items():
            for model, metrics in row.items():
                files[site][model] = str(_write(folder / f"{site}_{model}", DXO(DataKind.METRICS, dict(metrics))))
        if self.formatter is not None:
            ctx = self.engine.new_context(runtime.context)
            ctx.set_prop(AppConstants.VALIDATION_RESULT, files, private=True, sticky=False)
            log.info("cross-site evaluation (%s): %s", type(self.formatter).__name__, self.formatter.format(ctx))
        if self.cleanup_models:
            for stale in self._folder(runtime, AppConstants.CROSS_VAL_MODEL_DIR_NAME).iterdir():
                stale.unlink()
        return path

    def _folder(self, runtime: WorkflowRuntime, name: str) -> Path:
        folder = runtime.context.run_dir / self.cross_val_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def _write(path: Path, dxo: DXO) -> Path:
    """`dxo`'s bytes (fl-broker's codec) in `path`, written whole or not at all."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(dxo.to_bytes())
    tmp.replace(path)
    return path
