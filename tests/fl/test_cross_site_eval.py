"""Cross-site evaluation: local models collected, every model validated on every site, FLARE's JSON layout,
refusals of results that are not METRICS of finite numbers."""

from __future__ import annotations

import json
import logging

import numpy as np

from fl_broker.fl.cross_site_eval import CrossSiteModelEval
from fl_broker.fl.events import EventType
from fl_broker.wire.messages import DXO, DataKind, ReturnCode, Shareable, make_reply
from tests.fl.fakes import INITIAL, FakeChannel, MemoryPersistor, make_runtime

LOCAL = {"site-1": 100.0, "site-2": 200.0}  # each site's local model: all weights equal to this


def site(metrics_of=None):
    """A site that submits a constant local model and reports the mean of a model's weights."""

    def behave(name: str, task: Shareable, round_: int) -> list[Shareable]:
        if task.task_name == "submit_model":
            return [DXO(DataKind.WEIGHTS, {"numpy_key": np.full((3, 3), LOCAL[name], np.float32)}).to_shareable()]
        assert task.task_name == "validate" and task.dxo is not None
        owner = task.get_header("model_owner")
        mean = float(task.dxo.data["numpy_key"].mean())
        data = metrics_of(name, owner, mean) if metrics_of else {"mean": mean}
        return [data] if isinstance(data, Shareable) else [DXO(DataKind.METRICS, data).to_shareable()]

    return behave


def run(tmp_path, behaviours):
    workflow = CrossSiteModelEval(persistor=MemoryPersistor(INITIAL), wait_for_clients_timeout=1)
    runtime = make_runtime(tmp_path, FakeChannel(behaviours))
    workflow.run(runtime)
    path = tmp_path / "run_1" / "cross_site_val" / "cross_val_results.json"
    return runtime, json.loads(path.read_text())


def test_every_model_is_validated_on_every_site_in_flares_layout(tmp_path):
    runtime, results = run(tmp_path, {"site-1": site(), "site-2": site()})
    assert results == {
        data_site: {"SRV_global_model": {"mean": 5.0}, "site-1": {"mean": 100.0}, "site-2": {"mean": 200.0}}
        for data_site in ("site-1", "site-2")
    }
    assert runtime.channel.refused() == []
    received = [e for e in runtime.events if e.type == EventType.VALIDATION_RESULT_RECEIVED]
    assert len(received) == 6 and {e.data["data_client"] for e in received} == {"site-1", "site-2"}


def test_results_that_are_not_metrics_of_finite_numbers_are_refused_naming_site_and_model(tmp_path, caplog):
    def bad(name, owner, mean):
        if owner == "site-1":
            return DXO(DataKind.WEIGHTS, {"numpy_key": np.zeros(3)}).to_shareable()
        if owner == "site-2":
            return {"loss": "low"}
        return {"loss": float("nan")}

    with caplog.at_level(logging.WARNING):
        _, results = run(tmp_path, {"site-1": site(bad), "site-2": site()})
    assert results["site-1"] == {} and len(results["site-2"]) == 3
    text = caplog.text
    assert (
        "refused site-1's validation of model site-1: a validation result must be a METRICS DXO, got a WEIGHTS" in text
    )
    assert "refused site-1's validation of model site-2: metric 'loss' is not a number: 'low'" in text
    assert "refused site-1's validation of model SRV_global_model: metric 'loss' is nan" in text


def test_a_site_that_submits_no_model_is_left_out_and_still_validates_the_others(tmp_path, caplog):
    def no_model(name, task, round_):
        if task.task_name == "submit_model":
            return [make_reply(ReturnCode.EXECUTION_RESULT_ERROR)]
        return site()(name, task, round_)

    with caplog.at_level(logging.WARNING):
        _, results = run(tmp_path, {"site-1": no_model, "site-2": site()})
    assert sorted(results["site-1"]) == ["SRV_global_model", "site-2"]
    assert "refused the local model of site-1: return code EXECUTION_RESULT_ERROR" in caplog.text


def test_an_abort_stops_the_evaluation_without_writing_results(tmp_path):
    workflow = CrossSiteModelEval(persistor=MemoryPersistor(INITIAL), wait_for_clients_timeout=1)
    runtime = make_runtime(tmp_path, FakeChannel({"site-1": site(), "site-2": site()}))

    def abort_on_first_validation(event):
        if event.type == EventType.VALIDATION_RESULT_RECEIVED:
            runtime.abort_signal.trigger("aborted by admin")

    runtime.hooks.append(abort_on_first_validation)
    workflow.run(runtime)
    assert runtime.progress.phase == "aborted"
    assert not (tmp_path / "run_1" / "cross_site_val" / "cross_val_results.json").exists()
