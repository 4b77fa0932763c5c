"""Metrics of results: the checks, the weights, the round's weighted mean, and what Scatter-and-Gather does with
them (events with each site's metrics and the mean; a result whose metrics are not numbers refused, naming
the site and the round)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from fl_broker.fl.events import EventType
from fl_broker.fl.metrics import (
    MAX_METRICS,
    check_metrics,
    metrics_weight,
    result_metrics,
    validation_metrics,
    weighted_mean,
)
from fl_broker.wire.messages import DXO, DataKind, MetaKey, Shareable
from tests.fl.fakes import INITIAL, FakeChannel, add_delta, make_runtime, make_workflow


def test_numbers_of_every_kind_are_metrics() -> None:
    got = check_metrics({"loss": 0.25, "correct": 7, "acc": np.float32(0.5), "n": np.int64(3)})
    assert got == {"loss": 0.25, "correct": 7.0, "acc": 0.5, "n": 3.0}
    assert all(type(v) is float for v in got.values())  # JSON-able, whatever numpy type came in


@pytest.mark.parametrize(
    "values, problem",
    [
        ({"loss": float("nan")}, "metric 'loss' is nan"),
        ({"loss": float("inf")}, "metric 'loss' is inf"),
        ({"loss": np.float64("-inf")}, "metric 'loss' is -inf"),
        ({"loss": "0.5"}, "metric 'loss' is not a number: '0.5'"),
        ({"ok": True}, "metric 'ok' is not a number: True"),
        ({"loss": [0.5]}, "metric 'loss' is not a number: [0.5]"),
        ({"loss": None}, "metric 'loss' is not a number: None"),
        ({"": 1.0}, "metric name '' must be text of 1 to 64 characters"),
        ({"x" * 65: 1.0}, "must be text of 1 to 64 characters"),
        ([("loss", 0.5)], "metrics must be a dict of name -> number, got list"),
        ({f"m{i}": 1.0 for i in range(MAX_METRICS + 1)}, f"{MAX_METRICS + 1} metrics, at most {MAX_METRICS}"),
    ],
)
def test_what_is_not_a_metric_says_which_and_why(values: object, problem: str) -> None:
    got = check_metrics(values)
    assert isinstance(got, str) and problem in got


def test_a_training_result_carries_its_metrics_in_the_meta() -> None:
    dxo = DXO(DataKind.WEIGHTS, {}, meta={MetaKey.METRICS: {"loss": 0.5}, MetaKey.INITIAL_METRICS: 0.75})
    assert result_metrics(dxo) == {"loss": 0.5, "initial_metrics": 0.75}  # FLARE's one number counts too
    assert result_metrics(DXO(DataKind.WEIGHTS, {})) is None
    assert result_metrics(DXO(DataKind.WEIGHTS, {}, meta={MetaKey.METRICS: 3})) == (
        "meta 'metrics' must be a dict of name -> number, got int"
    )
    assert result_metrics(DXO(DataKind.WEIGHTS, {}, meta={MetaKey.INITIAL_METRICS: "good"})) == (
        "metric 'initial_metrics' is not a number: 'good'"
    )


def test_a_validation_result_must_be_a_metrics_dxo() -> None:
    assert validation_metrics(DXO(DataKind.METRICS, {"acc": 1})) == {"acc": 1.0}
    assert validation_metrics(None) == "a validation result must be a METRICS DXO, got no DXO"
    assert validation_metrics(DXO(DataKind.WEIGHTS, {"acc": 1})) == (
        "a validation result must be a METRICS DXO, got a WEIGHTS DXO"
    )
    assert validation_metrics(DXO(DataKind.METRICS, {"acc": float("nan")})) == "metric 'acc' is nan"


@pytest.mark.parametrize(
    "steps, weight",
    [(30, 30.0), (0.5, 0.5), (None, 1.0), (0, 1.0), (-2, 1.0), (True, 1.0), ("9", 1.0), (math.inf, 1.0)],
)
def test_a_site_weighs_its_num_steps_in_the_mean(steps: object, weight: float) -> None:
    meta = {} if steps is None else {MetaKey.NUM_STEPS_CURRENT_ROUND: steps}
    assert metrics_weight(DXO(DataKind.WEIGHTS, {}, meta=meta)) == weight


def test_the_weighted_mean_by_hand() -> None:
    per_site = {"site-1": {"loss": 1.0, "acc": 0.5}, "site-2": {"loss": 3.0}, "site-3": {"acc": 0.9}}
    weights = {"site-1": 3.0, "site-2": 1.0, "site-3": 1.0}
    # loss over site-1 and site-2: (3*1 + 1*3) / 4 = 1.5; acc over site-1 and site-3: (3*0.5 + 0.9) / 4 = 0.6
    got = weighted_mean(per_site, weights)
    assert list(got) == ["loss", "acc"]  # the order the sites name them in
    assert got["loss"] == pytest.approx(1.5) and got["acc"] == pytest.approx(0.6)
    assert weighted_mean({}, {}) == {}
    huge = weighted_mean({"a": {"x": 1e308}, "b": {"x": 1e308}}, {"a": 1e6, "b": 1e6})
    assert huge == {"x": pytest.approx(1e308)}  # weight shares: no overflow of a weighted sum


def reporting(metrics_of_site: dict[str, dict[str, object]], steps: dict[str, int] | None = None):
    """hello-numpy's trainer that also reports the given metrics (per site) and NUM_STEPS_CURRENT_ROUND."""

    def behave(site: str, task: Shareable, round_: int) -> list[Shareable]:
        [result] = add_delta()(site, task, round_)
        assert result.dxo is not None
        result.dxo.meta[MetaKey.METRICS] = {k: (v(round_) if callable(v) else v) for k, v in metrics_of_site.items()}
        result.dxo.meta[MetaKey.NUM_STEPS_CURRENT_ROUND] = (steps or {}).get(site, 1)
        return [result]

    return behave


def test_scatter_and_gather_reports_each_sites_metrics_and_the_weighted_mean(tmp_path) -> None:
    workflow, _ = make_workflow(min_clients=2, num_rounds=2)
    steps = {"site-1": 3, "site-2": 1}
    channel = FakeChannel(
        {
            "site-1": reporting({"loss": lambda r: 1.0 / (r + 1)}, steps),
            "site-2": reporting({"loss": lambda r: 3.0 / (r + 1), "acc": 0.5}, steps),
        }
    )
    runtime = make_runtime(tmp_path, channel)
    workflow.run(runtime)
    accepted = [e for e in runtime.events if e.type == EventType.AFTER_CONTRIBUTION_ACCEPT]
    assert {(e.round, e.data["site"]): (e.data["metrics"], e.data["metrics_weight"]) for e in accepted} == {
        (0, "site-1"): ({"loss": 1.0}, 3.0),
        (0, "site-2"): ({"loss": 3.0, "acc": 0.5}, 1.0),
        (1, "site-1"): ({"loss": 0.5}, 3.0),
        (1, "site-2"): ({"loss": 1.5, "acc": 0.5}, 1.0),
    }
    done = [e for e in runtime.events if e.type == EventType.ROUND_DONE]
    assert [e.data["metrics"] for e in done] == [{"loss": 1.5, "acc": 0.5}, {"loss": 0.75, "acc": 0.5}]
    assert done[0].data["site_metrics"] == {"site-1": {"loss": 1.0}, "site-2": {"loss": 3.0, "acc": 0.5}}


def test_a_round_without_metrics_says_nothing_of_them(tmp_path) -> None:
    workflow, _ = make_workflow(min_clients=1, num_rounds=1)
    runtime = make_runtime(tmp_path, FakeChannel({"site-1": add_delta()}))
    workflow.run(runtime)
    [done] = [e for e in runtime.events if e.type == EventType.ROUND_DONE]
    assert "metrics" not in done.data and "site_metrics" not in done.data


@pytest.mark.parametrize(
    "bad, detail",
    [({"loss": float("nan")}, "metric 'loss' is nan"), ({"loss": "low"}, "metric 'loss' is not a number: 'low'")],
)
def test_a_result_with_bad_metrics_is_refused_naming_site_and_round(tmp_path, caplog, bad, detail) -> None:
    workflow, persistor = make_workflow(min_clients=1, num_rounds=2, wait_time_after_min_received=0)
    channel = FakeChannel({"site-1": reporting(bad), "site-2": reporting({"loss": 0.5})})
    runtime = make_runtime(tmp_path, channel)
    with caplog.at_level(logging.WARNING, logger="fl_broker.fl.scatter_gather"):
        workflow.run(runtime)
    assert [(s.site, s.round, s.reason) for s in channel.refused()] == [("site-1", 0, detail), ("site-1", 1, detail)]
    assert f"round 0: refused result from site-1: {detail}" in caplog.text
    assert f"round 1: refused result from site-1: {detail}" in caplog.text
    np.testing.assert_array_equal(persistor.saved[-1]["numpy_key"], INITIAL["numpy_key"] + 2)  # site-2's rounds
    done = [e for e in runtime.events if e.type == EventType.ROUND_DONE]
    assert [e.data["metrics"] for e in done] == [{"loss": 0.5}, {"loss": 0.5}]  # the refused site is not in it
    assert runtime.progress.phase == "finished"


def test_cyclic_transfer_reports_each_hops_metrics_and_refuses_a_nan(tmp_path) -> None:
    from fl_broker.fl.cyclic import CyclicController
    from fl_broker.fl.model import FullModelShareableGenerator
    from tests.fl.fakes import MemoryPersistor

    def hop(site: str, task: Shareable, round_: int) -> list[Shareable]:
        assert task.dxo is not None
        loss = float("nan") if (site, round_) == ("site-2", 1) else 1.0 / (round_ + 1)
        meta = {MetaKey.METRICS: {"loss": loss}, MetaKey.NUM_STEPS_CURRENT_ROUND: 5}
        return [DXO(DataKind.WEIGHTS, {"w": task.dxo.data["w"] + 1}, meta=meta).to_shareable()]

    persistor = MemoryPersistor({"w": np.zeros(2)})
    workflow = CyclicController(
        persistor=persistor, shareable_generator=FullModelShareableGenerator(), num_rounds=2, task_check_period=0.01
    )
    channel = FakeChannel({"site-1": hop, "site-2": hop})
    runtime = make_runtime(tmp_path, channel)
    workflow.run(runtime)
    accepted = [e for e in runtime.events if e.type == EventType.AFTER_CONTRIBUTION_ACCEPT]
    assert [(e.round, e.data["site"], e.data.get("metrics"), e.data.get("metrics_weight")) for e in accepted] == [
        (0, "site-1", {"loss": 1.0}, 5.0),
        (0, "site-2", {"loss": 1.0}, 5.0),
        (1, "site-1", {"loss": 0.5}, 5.0),
    ]
    assert [(s.site, s.round, s.reason) for s in channel.refused()] == [("site-2", 1, "metric 'loss' is nan")]
    assert float(persistor.saved[-1]["w"][0]) == 3.0  # the NaN hop was skipped, the model went on
