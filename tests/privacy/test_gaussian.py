"""GaussianPrivacy: the update is clipped to an L2 norm, then N(0, (z C)^2) is added to every entry; the
privacy parameters go into the result's metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fl_broker.privacy.gaussian import GaussianPrivacy, gaussian_epsilon
from fl_broker.wire.messages import DataKind, MetaKey
from tests.privacy.helpers import context, read_only, result_of


def test_an_update_above_the_clip_norm_is_scaled_to_it_and_one_below_is_unchanged():
    big = {"a": read_only(np.array([3.0, 4.0], dtype=np.float32)), "b": read_only(np.array([[0.0]], np.float32))}
    out = GaussianPrivacy(clip_norm=2.5, noise_multiplier=0).process(result_of(big), context())
    assert out.dxo is not None
    np.testing.assert_allclose(out.dxo.data["a"], [1.5, 2.0])  # norm 5 -> 2.5: every entry halved
    assert out.dxo.data["a"].dtype == np.float32 and out.dxo.data["b"].shape == (1, 1)
    small = {"a": np.array([0.3, 0.4])}
    out = GaussianPrivacy(clip_norm=2.5, noise_multiplier=0).process(result_of(small), context())
    np.testing.assert_allclose(out.dxo.data["a"], [0.3, 0.4])


def test_the_norm_is_taken_over_all_entries_together():
    update = {"a": np.array([1.0, 1.0]), "b": np.array([1.0, 1.0])}  # norm 2 over both, 1.41 each
    out = GaussianPrivacy(clip_norm=1.0, noise_multiplier=0).process(result_of(update), context())
    np.testing.assert_allclose(np.concatenate([out.dxo.data["a"], out.dxo.data["b"]]), [0.5] * 4)


def test_weights_are_privatised_as_an_update_against_the_task():
    model = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)
    task = result_of({"numpy_key": read_only(model)}, DataKind.WEIGHTS)
    trained = result_of({"numpy_key": model + 1}, DataKind.WEIGHTS)  # update: nine ones, norm 3
    out = GaussianPrivacy(clip_norm=1.5, noise_multiplier=0).process(trained, context(task_data=task))
    assert out.dxo is not None and out.dxo.data_kind is DataKind.WEIGHTS
    np.testing.assert_array_equal(out.dxo.data["numpy_key"], model + 0.5)
    with pytest.raises(ValueError, match="needs the task's weights"):
        GaussianPrivacy(clip_norm=1.5, noise_multiplier=0).process(trained, context())


def test_the_noise_is_gaussian_with_std_noise_multiplier_times_clip_norm():
    dp = GaussianPrivacy(clip_norm=2.0, noise_multiplier=0.5, seed=42)
    out = dp.process(result_of({"w": np.zeros(200_000)}), context())
    noise = out.dxo.data["w"]
    assert abs(noise.mean()) < 0.01
    assert abs(noise.std() - 1.0) < 0.01  # 0.5 x 2.0
    assert abs(np.mean(np.abs(noise) < 1.0) - 0.6827) < 0.005  # within one std: a normal, not e.g. Laplace


def test_the_seed_fixes_the_noise():
    def draw(seed):
        out = GaussianPrivacy(clip_norm=1.0, noise_multiplier=1.0, seed=seed).process(
            result_of({"w": np.zeros(50)}), context()
        )
        return out.dxo.data["w"]

    np.testing.assert_array_equal(draw(1), draw(1))
    assert not np.array_equal(draw(1), draw(2))


def test_the_privacy_parameters_are_recorded_in_the_metrics():
    dp = GaussianPrivacy(clip_norm=2.0, noise_multiplier=1.1, delta=1e-5, seed=0)
    result = result_of({"w": np.ones(4)})
    result.dxo.meta[MetaKey.METRICS] = {"loss": 0.25}
    metrics = dp.process(result, context(current_round=4)).dxo.meta[MetaKey.METRICS]
    assert metrics["loss"] == 0.25  # the executor's own metrics stay
    assert metrics["dp_clip_norm"] == 2.0 and metrics["dp_noise_multiplier"] == 1.1
    assert metrics["dp_noise_std"] == pytest.approx(2.2) and metrics["dp_delta"] == 1e-5
    assert metrics["dp_releases"] == 5  # round 4: at least five releases in this run
    assert metrics["dp_epsilon"] == pytest.approx(gaussian_epsilon(1.1, 5, 1e-5))
    again = dp.process(result_of({"w": np.ones(4)}), context(current_round=4)).dxo.meta[MetaKey.METRICS]
    assert again["dp_releases"] == 6  # each release counts
    plain = GaussianPrivacy(clip_norm=1.0, noise_multiplier=0).process(result_of({"w": np.ones(2)}), context())
    assert "dp_epsilon" not in plain.dxo.meta[MetaKey.METRICS]  # no noise: no guarantee to state


def test_the_epsilon_is_the_best_renyi_order_of_the_composed_gaussian():
    for z, k, delta in ((1.1, 10, 1e-5), (0.8, 100, 1e-6), (4.0, 1, 1e-3)):
        alphas = np.linspace(1.0001, 2000, 2_000_000)
        numeric = np.min(k * alphas / (2 * z * z) + math.log(1 / delta) / (alphas - 1))
        assert gaussian_epsilon(z, k, delta) == pytest.approx(numeric, rel=1e-4)
    assert gaussian_epsilon(0, 3, 1e-5) == math.inf


def test_integer_arrays_and_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="not a floating-point array"):
        GaussianPrivacy(clip_norm=1, noise_multiplier=1).process(result_of({"w": np.arange(3)}), context())
    for args in ({"clip_norm": 0, "noise_multiplier": 1}, {"clip_norm": 1, "noise_multiplier": -1}):
        with pytest.raises(ValueError):
            GaussianPrivacy(**args)
    with pytest.raises(ValueError, match="delta"):
        GaussianPrivacy(clip_norm=1, noise_multiplier=1, delta=1)
