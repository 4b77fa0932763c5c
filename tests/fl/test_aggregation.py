"""The weighted mean and the in-time aggregator."""

from __future__ import annotations

import logging

import numpy as np
import pytest

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
    with pytest.raises(ValueError):
        InTimeAccumulateWeightedAggregator().aggregate()


@pytest.mark.parametrize("kwargs", [{"expected_data_kind": "METRICS"}, {"aggregation_weights": {"a": -1}}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        InTimeAccumulateWeightedAggregator(**kwargs)


def test_memory_is_one_accumulator_whatever_the_number_of_clients():
    agg = InTimeAccumulateWeightedAggregator()
    for i in range(20):
        agg.accept(f"s{i}", DXO(DataKind.WEIGHTS, {"w": np.full(1000, i, dtype=np.float32)}))
    assert len(agg._sum._sums) == 1 and agg._sum._sums["w"].nbytes == 4000  # O(model), not O(clients x model)
    np.testing.assert_allclose(agg.aggregate().data["w"], 9.5)
