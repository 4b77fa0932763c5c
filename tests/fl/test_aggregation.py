"""The weighted mean and the in-time aggregator."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from fl_broker.errors import AggregationError
from fl_broker.fl.aggregation import InTimeAccumulateWeightedAggregator, weighted_mean
from fl_broker.wire.messages import DXO, DataKind


def test_weighted_mean_matches_numpy():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(4, 5)).astype(np.float64) for _ in range(3)]
    weights = [1.0, 2.0, 5.0]
    mean = weighted_mean(({"w": a}, w) for a, w in zip(arrays, weights, strict=True))
    np.testing.assert_allclose(mean["w"], np.average(np.stack(arrays), axis=0, weights=weights))


def test_integer_arrays_are_not_truncated():
    mean = weighted_mean([({"w": np.array([1], dtype=np.float32)}, 1.0), ({"w": np.array([2], dtype=np.float32)}, 1.0)])
    assert mean["w"].dtype == np.float32 and mean["w"][0] == 1.5


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        weighted_mean([({"w": np.zeros(3)}, 1.0), ({"w": np.zeros(4)}, 1.0)])


def test_weight_is_site_weight_times_steps():
    agg = InTimeAccumulateWeightedAggregator(aggregation_weights={"a": 2.0})
    assert agg.accept("a", DXO(DataKind.WEIGHTS, {"w": np.array([0.0])}, {"NUM_STEPS_CURRENT_ROUND": 3})) is None
    assert agg.accept("b", DXO(DataKind.WEIGHTS, {"w": np.array([7.0])}, {"NUM_STEPS_CURRENT_ROUND": 1})) is None
    result = agg.aggregate()
    assert result.data_kind == DataKind.WEIGHTS
    np.testing.assert_allclose(result.data["w"], [1.0])  # (6*0 + 1*7) / 7


def test_missing_steps_count_as_one_with_a_warning(caplog):
    agg = InTimeAccumulateWeightedAggregator()
    with caplog.at_level(logging.WARNING):
        agg.accept("a", DXO(DataKind.WEIGHTS, {"w": np.array([2.0])}))
    assert "NUM_STEPS_CURRENT_ROUND" in caplog.text
    np.testing.assert_array_equal(agg.aggregate().data["w"], [2.0])


def test_wrong_kind_and_mismatched_names_are_reasons():
    agg = InTimeAccumulateWeightedAggregator(expected_data_kind="WEIGHT_DIFF")
    assert "expected WEIGHT_DIFF" in agg.accept("a", DXO(DataKind.WEIGHTS, {"w": np.zeros(2)}))
    assert agg.accept("a", DXO(DataKind.WEIGHT_DIFF, {"w": np.zeros(2)})) is None
    assert "names" in agg.accept("b", DXO(DataKind.WEIGHT_DIFF, {"v": np.zeros(2)}))


def test_aggregate_resets_for_the_next_round():
    agg = InTimeAccumulateWeightedAggregator()
    agg.accept("a", DXO(DataKind.WEIGHTS, {"w": np.array([4.0])}))
    agg.aggregate()
    agg.accept("a", DXO(DataKind.WEIGHTS, {"w": np.array([8.0])}))
    np.testing.assert_array_equal(agg.aggregate().data["w"], [8.0])


def test_aggregate_with_nothing_accepted_raises():
    with pytest.raises(AggregationError, match="nothing with a positive weight"):
        InTimeAccumulateWeightedAggregator().aggregate()


def test_aggregate_with_only_zero_weights_raises_and_resets():
    agg = InTimeAccumulateWeightedAggregator()
    assert agg.accept("a", weights([1.0], steps=0)) is None
    with pytest.raises(AggregationError, match=r"\(1 contributions\)"):
        agg.aggregate()
    agg.accept("a", weights([5.0]))
    np.testing.assert_array_equal(agg.aggregate().data["w"], [5.0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"expected_data_kind": "METRICS"},
        {"aggregation_weights": {"a": -1}},
        {"aggregation_weights": {"a": float("nan")}},
        {"aggregation_weights": {"a": float("inf")}},
        {"min_num_steps": 5, "max_num_steps": 2},
        {"min_num_steps": -1},
        {"max_num_steps": float("inf")},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        InTimeAccumulateWeightedAggregator(**kwargs)


def test_memory_is_one_accumulator_whatever_the_number_of_clients():
    agg = InTimeAccumulateWeightedAggregator()
    for i in range(20):
        agg.accept(f"s{i}", DXO(DataKind.WEIGHTS, {"w": np.full(1000, i, dtype=np.float32)}))
    assert len(agg._sum._sums) == 1 and agg._sum._sums["w"].nbytes == 4000  # O(model), not O(clients x model)
    np.testing.assert_allclose(agg.aggregate().data["w"], 9.5)


def weights(values, *, steps=1, dtype=np.float32) -> DXO:
    return DXO(DataKind.WEIGHTS, {"w": np.array(values, dtype=dtype)}, {"NUM_STEPS_CURRENT_ROUND": steps})


@pytest.mark.parametrize(
    "dxo, reason",
    [
        (DXO(DataKind.WEIGHTS, {}), "carries no arrays to aggregate"),
        (DXO(DataKind.WEIGHTS, {"w": [[1.0, 2.0], [3.0]]}), "'w' is not a regular array: .*inhomogeneous"),
        (DXO(DataKind.WEIGHTS, {"w": ["a", "b"]}), "'w' has non-numeric dtype"),
        (weights([1.0, float("nan")]), "'w' contains NaN or Inf"),
        (weights([float("-inf")]), "'w' contains NaN or Inf"),
        (weights([1.0], steps=float("nan")), "NUM_STEPS_CURRENT_ROUND must be a finite number, got nan"),
        (weights([1.0], steps=float("inf")), "must be a finite number"),
        (weights([1.0], steps="3"), "must be a finite number, got '3'"),
        (weights([1.0], steps=True), "must be a finite number, got True"),
        (weights([1.0], steps=-1), r"NUM_STEPS_CURRENT_ROUND is -1, outside the accepted 0 \.\. 1e\+06"),
        (weights([1.0], steps=1e30), "is 1e\\+30, outside the accepted"),
        (weights([3.4e38], steps=10), "'w' could overflow the float32 sum"),
    ],
)
def test_contributions_that_would_poison_the_sum_are_refused(dxo, reason):
    agg = InTimeAccumulateWeightedAggregator()
    assert re.search(reason, agg.accept("a", dxo) or "")
    assert agg.accept("b", weights([2.0])) is None  # nothing of the refused one was counted
    np.testing.assert_array_equal(agg.aggregate().data["w"], [2.0])


def test_an_empty_contribution_after_exclude_vars_is_refused():
    agg = InTimeAccumulateWeightedAggregator(exclude_vars=["w"])
    assert agg.accept("a", weights([1.0])) == "carries no arrays to aggregate"


def test_overflow_is_judged_on_the_running_sum():
    agg = InTimeAccumulateWeightedAggregator()
    big = float(np.finfo(np.float32).max) * 0.6
    assert agg.accept("a", weights([big])) is None
    assert "could overflow" in agg.accept("b", weights([big]))  # 1.2 x the largest float32
    assert agg.accept("c", weights([-1.0])) is None
    result = agg.aggregate().data["w"]
    assert np.isfinite(result).all() and result.dtype == np.float32


def test_large_but_safe_values_are_aggregated_exactly():
    agg = InTimeAccumulateWeightedAggregator()
    assert agg.accept("a", weights([1e38], steps=2)) is None
    assert agg.accept("b", weights([1e38], steps=1)) is None
    np.testing.assert_allclose(agg.aggregate().data["w"], [1e38], rtol=1e-6)


def test_a_configured_step_range_and_numpy_step_counts():
    agg = InTimeAccumulateWeightedAggregator(min_num_steps=1, max_num_steps=100)
    assert "outside the accepted 1 .. 100" in agg.accept("a", weights([1.0], steps=0))
    assert "outside the accepted 1 .. 100" in agg.accept("a", weights([1.0], steps=101))
    assert agg.accept("a", weights([1.0], steps=np.int64(100))) is None
    assert agg.accept("b", weights([4.0], steps=np.float32(300 / 3))) is None
    np.testing.assert_allclose(agg.aggregate().data["w"], [2.5])


def test_integer_models_accumulate_in_float64():
    agg = InTimeAccumulateWeightedAggregator()
    assert agg.accept("a", weights([2**62], dtype=np.int64)) is None
    assert agg.accept("b", weights([2**62], dtype=np.int64)) is None
    result = agg.aggregate().data["w"]
    assert result.dtype == np.int64 and result[0] == 2**62


def test_add_after_check_reduces_each_array_once(monkeypatch):
    from fl_broker.fl import aggregation

    calls = []
    real_peak = aggregation.peak
    monkeypatch.setattr(aggregation, "peak", lambda array: calls.append(array) or real_peak(array))
    total = aggregation.WeightedSum()
    first = {"w": np.array([1.0, -3.0]), "b": np.array([2.0])}
    assert total.check(first, 2.0) is None
    total.add(first, 2.0)
    assert len(calls) == 2  # one reduction per array, shared by check() and add()
    second = {"w": np.array([1e308, 0.0]), "b": np.array([0.5])}
    assert total.check(second, 1.0) is None
    second["w"] = second["w"].copy()  # a different array than the one checked: add() measures it itself
    total.add(second, 1.0)
    assert len(calls) == 5
    # The overflow bound still counts both contributions: 2 * 3 + 1e308 (+ this one's 1e308) overflows.
    assert "could overflow" in (total.check({"w": np.array([1e308, 0.0]), "b": np.array([0.0])}, 1.0) or "")
