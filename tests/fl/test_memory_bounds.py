"""The server's per-result work allocates no model-sized temporaries (measured with tracemalloc, which sees
numpy's allocations): the bounds hold for any number of contributions, so memory cannot grow with clients."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import numpy as np

from fl_broker.fl.aggregation import InTimeAccumulateWeightedAggregator, add_weighted
from fl_broker.fl.round import check_against_model
from fl_broker.wire.messages import DXO, DataKind, MetaKey

SIZE = 4_000_000  # float32: a 16 MB model
MODEL_BYTES = SIZE * 4
SLACK = 2 * 1024 * 1024  # one block of the blockwise multiply-add (1 MiB), Python objects, logging


def _traced_peak(work: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _contribution(value: float, steps: float) -> DXO:
    dxo = DXO(data_kind=DataKind.WEIGHTS, data={"w": np.full(SIZE, value, dtype=np.float32)})
    dxo.set_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND, steps)
    return dxo


def test_aggregating_many_weighted_results_takes_one_model_of_memory():
    contributions = [_contribution(float(i), steps=2.0 + i) for i in range(12)]  # weights != 1: multiply-add
    aggregator = InTimeAccumulateWeightedAggregator()
    result: list[DXO] = []

    def aggregate() -> None:
        for i, dxo in enumerate(contributions):
            assert aggregator.accept(f"site-{i}", dxo) is None
        result.append(aggregator.aggregate())

    peak = _traced_peak(aggregate)
    assert peak <= MODEL_BYTES + SLACK, f"{peak / 2**20:.1f} MiB for a {MODEL_BYTES / 2**20:.1f} MiB model"
    weights = np.array([2.0 + i for i in range(12)])
    expected = float((weights * np.arange(12)).sum() / weights.sum())
    np.testing.assert_allclose(result[0].data["w"][[0, SIZE // 2, -1]], expected, rtol=1e-6)


def test_checking_a_result_against_the_model_allocates_no_model_sized_array():
    model = {"w": np.zeros(SIZE, dtype=np.float32)}
    data = {"w": np.ones(SIZE, dtype=np.float32)}
    problems: list[str | None] = []
    peak = _traced_peak(lambda: problems.append(check_against_model(data, model, allow_non_finite=False)))
    assert problems == [None]
    assert peak <= SLACK, f"{peak / 2**20:.1f} MiB to check a {MODEL_BYTES / 2**20:.1f} MiB result"
    data["w"][SIZE - 1] = np.inf
    assert check_against_model(data, model, allow_non_finite=False) == "'w' contains NaN or Inf"


def test_add_weighted_matches_the_plain_formula_for_any_layout_and_dtype():
    rng = np.random.default_rng(7)
    for array in (
        rng.normal(size=(700, 900)).astype(np.float32),
        rng.normal(size=(900, 700)).astype(np.float32).T,  # not contiguous
        rng.integers(-50, 50, size=300_001),
        np.array(3.5),
    ):
        for weight in (1.0, 0.25):
            acc = np.ones(array.shape, dtype=np.float32 if array.dtype == np.float32 else np.float64)
            expected = acc + array * weight
            add_weighted(acc, array, weight)
            np.testing.assert_allclose(acc, expected, rtol=1e-6)
