"""SVTPrivacy: a noisy threshold selects ceil(fraction x size) entries, shared clipped with Laplace noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fl_broker.privacy.svt import SVTPrivacy
from fl_broker.wire.messages import DataKind
from tests.privacy.helpers import context, read_only, result_of

# With a huge epsilon the threshold is tau and the queries are exact, and with a huge noise_var the shared
# values carry almost no noise: what the selection and the clipping do shows plainly.
EXACT = {"epsilon": 1e9, "noise_var": 1e9, "replace": False, "seed": 1}


def test_the_entries_above_the_threshold_are_shared_clipped_and_the_rest_are_zero():
    update = read_only(np.array([0.001, -0.05, 0.002, 0.3, -0.0005, 0.04, 0.0, 0.003, 0.001, 0.0002]) * 4)
    svt = SVTPrivacy(fraction=0.3, gamma=0.02, tau=0.01, **EXACT)
    out = svt.process(result_of({"w": update.astype(np.float32), "n": np.float32(7)}, steps=4), context())
    assert out.dxo is not None
    # Per step (/4) only -0.05, 0.3 and 0.04 reach tau = 0.01; each is clipped to gamma and scaled back by 4.
    np.testing.assert_allclose(out.dxo.data["w"], [0, -0.08, 0, 0.08, 0, 0.08, 0, 0, 0, 0], atol=1e-6)
    assert out.dxo.data["w"].dtype == np.float32 and out.dxo.data["n"] == 7  # a scalar passes unchanged


def test_exactly_the_fraction_is_shared_without_replacement_and_at_most_it_with():
    update = np.random.default_rng(3).normal(0, 1e-4, size=1000)
    for replace, check in ((False, lambda k: k == 100), (True, lambda k: 0 < k <= 100)):
        svt = SVTPrivacy(fraction=0.1, epsilon=0.1, noise_var=0.1, gamma=1e-4, tau=1e-6, replace=replace, seed=5)
        out = svt.process(result_of({"w": update}), context())
        assert out.dxo is not None
        shared = out.dxo.data["w"]
        assert check(np.count_nonzero(shared)), np.count_nonzero(shared)
        assert np.abs(shared).max() <= 1e-4  # clipped to gamma after the noise


def test_the_shared_noise_is_laplace_with_scale_two_gamma_over_noise_var():
    # fraction 1 without replacement shares every entry once; gamma is so large that clipping never bites.
    gamma, noise_var = 1000.0, 2000.0  # scale 2 x 1000 / 2000 = 1
    svt = SVTPrivacy(fraction=1.0, epsilon=1e9, noise_var=noise_var, gamma=gamma, tau=-1.0, replace=False, seed=11)
    out = svt.process(result_of({"w": np.zeros(200_000)}), context())
    assert out.dxo is not None
    noise = out.dxo.data["w"]
    assert abs(noise.mean()) < 0.01
    assert abs(np.abs(noise).mean() - 1.0) < 0.01  # E|Laplace(b)| = b
    assert abs(noise.var() - 2.0) < 0.05  # Var = 2 b^2


class Recording:
    """A random generator that records the scale of every Laplace draw."""

    def __init__(self, rng):
        self.rng, self.laplace_scales = rng, []

    def laplace(self, scale, size=None):
        self.laplace_scales.append((scale, size))
        return self.rng.laplace(scale=scale, size=size)

    def choice(self, *args, **kwargs):
        return self.rng.choice(*args, **kwargs)


def test_the_threshold_query_and_release_noise_have_flare_s_scales():
    svt = SVTPrivacy(fraction=0.5, epsilon=0.5, noise_var=0.2, gamma=0.25, tau=0.0, seed=2)
    svt.rng = Recording(svt.rng)
    svt.process(result_of({"w": np.random.default_rng(1).normal(0, 0.1, size=1000)}), context())
    (threshold, none), *queries, (release, size) = svt.rng.laplace_scales
    n = math.ceil(1000 * 0.5)
    assert threshold == pytest.approx(2 * 0.25 / 0.5) and none is None  # one threshold per release
    assert queries and all(scale == pytest.approx(4 * 0.25 * n / (0.5 * (2 * n) ** (2 / 3))) for scale, _ in queries)
    assert queries[0][1] == 1000  # the first query asks every entry, later ones only those not yet accepted
    assert all(later[1] <= earlier[1] for earlier, later in zip(queries, queries[1:], strict=False))
    assert release == pytest.approx(2 * 0.25 / 0.2) and size == (n,)


def test_same_seed_same_release_and_weights_are_refused():
    update = np.random.default_rng(0).normal(0, 1e-5, size=500)
    first, second = (SVTPrivacy(seed=9).process(result_of({"w": update}), context()) for _ in range(2))
    np.testing.assert_array_equal(first.dxo.data["w"], second.dxo.data["w"])
    with pytest.raises(ValueError, match="does not filter WEIGHTS"):
        SVTPrivacy().process(result_of({"w": update}, DataKind.WEIGHTS), context())


@pytest.mark.parametrize("args", [{"fraction": 0}, {"fraction": 1.5}, {"epsilon": 0}, {"noise_var": -1}, {"gamma": 0}])
def test_arguments_out_of_range_are_refused(args):
    with pytest.raises(ValueError):
        SVTPrivacy(**args)
