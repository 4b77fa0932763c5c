"""PercentilePrivacy: entries below the percentile cutoff become 0, the rest are clipped to gamma, per step."""

from __future__ import annotations

import numpy as np
import pytest

from fl_broker.privacy.percentile import PercentilePrivacy
from fl_broker.wire.messages import DataKind
from tests.privacy.helpers import context, read_only, result_of


def test_the_cutoff_zeroes_small_entries_and_gamma_clips_the_others_per_local_step():
    # Per step (steps = 2) the magnitudes are 0.01 0.2 0.3 0.04 | 0.05 0.001 | 2.5 (the scalar counts for
    # the cutoff): the median is 0.05, so 0.01, 0.04 and 0.001 become 0; 0.05 stays; 0.2 and 0.3 clip to 0.1.
    data = {
        "a": read_only(np.array([0.02, -0.4, 0.6, -0.08], dtype=np.float32)),
        "b": read_only(np.array([[0.1, 0.002]], dtype=np.float32)),
        "c": np.float32(5.0),
    }
    out = PercentilePrivacy(percentile=50, gamma=0.1).process(result_of(data, steps=2), context())
    assert out.dxo is not None
    np.testing.assert_allclose(out.dxo.data["a"], [0.0, -0.2, 0.2, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out.dxo.data["b"], [[0.1, 0.0]], rtol=1e-6)
    assert out.dxo.data["c"] == np.float32(5.0)  # a scalar passes unchanged
    assert out.dxo.data["a"].dtype == np.float32 and out.dxo.data["b"].shape == (1, 2)
    np.testing.assert_array_equal(data["a"], np.array([0.02, -0.4, 0.6, -0.08], dtype=np.float32))  # untouched


def test_the_share_of_zeroed_entries_is_the_percentile():
    rng = np.random.default_rng(7)
    update = rng.normal(0, 1, size=20_000)
    out = PercentilePrivacy(percentile=30, gamma=0.5).process(result_of({"w": update}), context())
    assert out.dxo is not None
    shared = out.dxo.data["w"]
    assert abs(np.mean(shared == 0) - 0.30) < 0.002
    assert np.abs(shared).max() == 0.5  # everything kept is clipped to gamma
    cutoff = np.percentile(np.abs(update), 30)
    np.testing.assert_array_equal(shared == 0, np.abs(update) < cutoff)


def test_weights_are_refused_and_other_kinds_pass():
    with pytest.raises(ValueError, match="does not filter WEIGHTS data"):
        PercentilePrivacy().process(result_of({"w": np.ones(3)}, DataKind.WEIGHTS), context())
    metrics = result_of({"loss": 0.5}, DataKind.METRICS)
    assert PercentilePrivacy().process(metrics, context()).dxo.data == {"loss": 0.5}


@pytest.mark.parametrize(("args", "message"), [({"percentile": 101}, "between 0 and 100"), ({"gamma": 0}, "gamma")])
def test_arguments_that_would_make_it_do_nothing_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        PercentilePrivacy(**args)


def test_an_integer_array_or_a_bad_step_count_is_refused():
    with pytest.raises(ValueError, match="'w' is int64, not a floating-point array"):
        PercentilePrivacy().process(result_of({"w": np.arange(3)}), context())
    with pytest.raises(ValueError, match="NUM_STEPS_CURRENT_ROUND must be a positive number"):
        PercentilePrivacy().process(result_of({"w": np.ones(3)}, steps=0), context())
