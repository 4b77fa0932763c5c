"""A FLARE 2.0 style app folder (tests/flare_apps/hello-flare: custom code importing nvflare.apis and another
custom module, `name` components, a nested component, a persistor returning a ModelLearnable, a model locator
and a formatter) run unchanged by `fl-broker simulate`, fresh and resumed."""

from __future__ import annotations

import json

from fl_broker.cli import main
from tests.federation.flare_app import (
    INITIAL,
    assert_exact_results,
    copy_app,
    formatter_line,
    fresh_run_events,
    run_events,
)


def test_a_flare_app_runs_unchanged_with_exact_results(tmp_path, capsys):
    app = copy_app(tmp_path)
    assert main(["simulate", str(app), "--clients", "2", "--workspace", str(tmp_path / "ws")]) == 0
    assert "run 1: finished" in capsys.readouterr().out
    run_dir = tmp_path / "ws" / "server" / "run_1"
    assert_exact_results(run_dir)
    assert run_events(run_dir) == fresh_run_events(3)
    assert formatter_line() in (tmp_path / "ws" / "server" / "log.txt").read_text()
    site_log = (tmp_path / "ws" / "site-1" / "log.txt").read_text()
    for r in range(3):
        assert f"INFO NPTrainer: [run=1, task=train, id=run1-train-round{r}]: site-1 trains round {r}" in site_log
    assert "INFO NPValidator: [run=1, task=validate" in site_log


def test_a_resumed_flare_run_reads_the_saved_model_once_its_start_round_is_decided(tmp_path, capsys):
    app = copy_app(tmp_path, num_rounds=2)
    workspace = ["--clients", "2", "--workspace", str(tmp_path / "ws")]
    assert main(["simulate", str(app), *workspace]) == 0
    # The run is taken up again with a third round: it resumes after the two committed ones.
    config = app / "config" / "config_fed_server.json"
    config.write_text(config.read_text().replace('"num_rounds": 2', '"num_rounds": 3'))
    assert main(["simulate", str(app), *workspace, "--run", "1"]) == 0
    assert capsys.readouterr().out.count("run 1: finished") == 2
    run_dir = tmp_path / "ws" / "server" / "run_1"
    assert_exact_results(run_dir)
    resumed = run_events(run_dir)[len(fresh_run_events(2)) :]
    assert resumed == [
        "_start_run round=None",
        "load start_round=2 saved",  # the start round was decided before the persistor was asked
        "save meta={'source': 'saved'}",  # the committed model saved again, with the meta the persistor gave
        "_initial_model_loaded round=None",
        "_round_started round=2",
        "save meta={'source': 'saved'}",
        "_round_done round=2",
        "_cross_val_init round=None",
        "_end_run round=None",
    ]
    assert "resuming run 1 at round 2" in (tmp_path / "ws" / "server" / "log.txt").read_text()


EMPTY_FIRST = """
from nvflare.app_common.abstract.model import make_model_learnable
from nvflare.app_common.app_constant import AppConstants

from np_model_persistor import NPModelPersistor


class EmptyFirst(NPModelPersistor):
    \"\"\"No weights of its own at the start: they come from the sites (InitializeGlobalWeights).\"\"\"

    def load_model(self, fl_ctx):
        if fl_ctx.get_prop(AppConstants.START_ROUND, 0) == 0:
            return make_model_learnable({}, {})
        return super().load_model(fl_ctx)
"""

WEIGHTS_PROVIDER = """
import numpy as np

from nvflare.apis.dxo import DXO, DataKind
from nvflare.apis.executor import Executor


class WeightsProvider(Executor):
    def execute(self, task_name, shareable, fl_ctx, abort_signal):
        weights = {"numpy_key": np.array(VALUES, dtype=np.float32), "frozen_key": np.array([100.0], dtype=np.float32)}
        return DXO(data_kind=DataKind.WEIGHTS, data=weights).to_shareable()
""".replace("VALUES", repr((2 * INITIAL).tolist()))


def test_initialize_global_weights_takes_the_sites_weights_for_scatter_and_gather(tmp_path):
    app = copy_app(tmp_path)
    (app / "custom" / "empty_first.py").write_text(EMPTY_FIRST)
    (app / "custom" / "weights_provider.py").write_text(WEIGHTS_PROVIDER)
    server_path, client_path = app / "config" / "config_fed_server.json", app / "config" / "config_fed_client.json"
    server, client = json.loads(server_path.read_text()), json.loads(client_path.read_text())
    server["components"][0]["path"] = "empty_first.EmptyFirst"
    server["workflows"].insert(
        0, {"id": "pre_train", "name": "InitializeGlobalWeights", "args": {"task_name": "get_weights"}}
    )
    client["executors"].append({"tasks": ["get_weights"], "executor": {"path": "weights_provider.WeightsProvider"}})
    server_path.write_text(json.dumps(server))
    client_path.write_text(json.dumps(client))
    assert main(["simulate", str(app), "--clients", "2", "--workspace", str(tmp_path / "ws")]) == 0
    assert_exact_results(tmp_path / "ws" / "server" / "run_1", start=2 * INITIAL)


PLAIN_PERSISTOR = """
from nvflare.app_common.abstract.model_persistor import ModelPersistor


class Plain(ModelPersistor):
    def load_model(self, fl_ctx):
        return {"numpy_key": [1.0]}  # FLARE wants a ModelLearnable

    def save_model(self, model, fl_ctx):
        pass
"""


def test_a_persistor_that_breaks_flares_contract_fails_the_run_in_one_line(tmp_path, capsys):
    app = copy_app(tmp_path)
    (app / "custom" / "plain.py").write_text(PLAIN_PERSISTOR)
    config = app / "config" / "config_fed_server.json"
    server = json.loads(config.read_text())
    server["components"][0] = {"id": "persistor", "path": "plain.Plain"}
    config.write_text(json.dumps(server))
    assert main(["simulate", str(app), "--clients", "2", "--workspace", str(tmp_path / "ws")]) == 1
    captured = capsys.readouterr()
    # The run fails at its first step: while simulate starts the sites, or before it (then start_app says why).
    lines = [line for line in captured.out.splitlines() if line.startswith(("run 1:", "simulate failed:"))]
    assert len(lines) == 1, captured.out
    (line,) = lines
    assert line.endswith(
        "Plain.load_model returned a dict with keys ['numpy_key'], expected a ModelLearnable "
        "(make_model_learnable(weights, meta))"
    )
    assert "Traceback" not in captured.out + captured.err
