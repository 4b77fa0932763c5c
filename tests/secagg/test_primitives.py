"""The building blocks of secure aggregation: Shamir sharing, the fixed-point ring, the masks' PRG, key
agreement and sealing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fl_broker.errors import SecAggError
from fl_broker.secagg import crypto, protocol, ring, shamir

pytest.importorskip("cryptography")  # the suite installs the secagg extra; a bare checkout skips

SECRET = bytes(range(32))


def test_any_threshold_shares_rebuild_the_secret_and_fewer_do_not():
    shares = shamir.split(SECRET, holders=5, threshold=3)
    assert len(shares) == 5 and all(len(share) == shamir.SHARE_BYTES for share in shares)
    for subset in itertools.combinations(range(5), 3):
        assert shamir.combine({x + 1: shares[x] for x in subset}, threshold=3) == SECRET
    with pytest.raises(SecAggError, match="2 shares, 3 needed"):
        shamir.combine({1: shares[0], 2: shares[1]}, threshold=3)
    # Two shares of a degree-2 polynomial fit every secret equally: read as a line, they point at a random
    # field element, which does not fit in 32 bytes.
    with pytest.raises(SecAggError, match="do not fit together"):
        shamir.combine({1: shares[0], 2: shares[1]}, threshold=2)


def test_a_wrong_share_is_noticed_and_fresh_sharings_differ():
    shares = shamir.split(SECRET, holders=3, threshold=2)
    wrong = shamir.split(bytes(32), holders=3, threshold=3)[1]  # a share, of another sharing
    with pytest.raises(SecAggError, match="do not fit together"):
        shamir.combine({1: shares[0], 2: wrong}, threshold=2)
    assert shamir.split(SECRET, 3, 2)[0] != shares[0]  # random coefficients each time
    with pytest.raises(SecAggError, match="threshold"):
        shamir.split(SECRET, holders=2, threshold=3)


def test_quantization_round_trips_within_half_a_step_and_sums_in_the_ring():
    rng = np.random.default_rng(1)
    updates = [rng.normal(0, 3, 1000).astype(np.float32) for _ in range(4)]
    weights = [1.0, 2.0, 3.5, 0.5]
    total = np.zeros(1000, dtype=np.uint64)
    for update, weight in zip(updates, weights, strict=True):
        np.add(total, ring.quantize(update, weight, 16, parties=4, name="w"), out=total)
    mean = ring.dequantize(total, 16, sum(weights), np.dtype(np.float64))
    expected = sum(u.astype(np.float64) * w for u, w in zip(updates, weights, strict=True)) / sum(weights)
    error = np.abs(mean - expected).max()
    assert 0 < error <= 0.5 * 2**-16  # each weighted value is off by at most half a step
    integers = np.arange(-5, 5, dtype=np.float32)
    exact = ring.dequantize(ring.quantize(integers, 1.0, 16, 1, "i"), 16, 1.0, np.dtype(np.float32))
    np.testing.assert_array_equal(exact, integers)


def test_quantization_refuses_what_could_leave_the_ring_and_non_finite_values():
    limit = ring.max_abs(16, parties=8)
    assert limit * 8 * 2**16 < 2**63
    with pytest.raises(SecAggError, match="'big' reaches"):
        ring.quantize(np.array([limit * 1.01]), 1.0, 16, 8, "big")
    with pytest.raises(SecAggError, match="'nan' contains NaN or Inf"):
        ring.quantize(np.array([1.0, np.nan]), 1.0, 16, 2, "nan")
    with pytest.raises(SecAggError, match="only real numbers"):
        ring.quantize(np.array([1j]), 1.0, 16, 2, "c")
    with pytest.raises(ValueError, match="fraction_bits"):
        ring.check_fraction_bits(0)


def test_masks_cancel_exactly_and_look_uniform():
    seed = crypto.random_seed()
    values = ring.quantize(np.linspace(-1, 1, 300_000), 1.0, 16, 2, "w")
    masked = values.copy()
    crypto.add_mask(masked, seed, "w", +1)  # more than one PRG block
    assert np.count_nonzero(masked == values) < 5
    top_bits = (masked >> np.uint64(63)).mean()
    assert 0.49 < top_bits < 0.51  # uniform words: the top bit is set half the time
    crypto.add_mask(masked, seed, "w", -1)
    np.testing.assert_array_equal(masked, values)
    other = values.copy()
    crypto.add_mask(other, seed, "b", +1)  # another array's name: another stream
    assert np.count_nonzero(other == masked + 0) < 5


def test_two_sites_agree_the_same_mask_seed_and_seal_to_each_other_only():
    first, second, third = (crypto.KeyPair.generate() for _ in range(3))
    info = protocol.mask_info(1, 0, "site-1", "site-2")
    assert first.agree(second.public_bytes(), info) == second.agree(first.public_bytes(), info)
    assert first.agree(second.public_bytes(), info) != first.agree(third.public_bytes(), info)
    assert first.agree(second.public_bytes(), info) != first.agree(second.public_bytes(), info + b"x")
    rebuilt = crypto.KeyPair.from_private_bytes(first.private_bytes())
    assert rebuilt.public_bytes() == first.public_bytes()
    key = first.agree(second.public_bytes(), b"seal")
    sealed = crypto.encrypt(key, b"share", b"1|0|site-1->site-2")
    assert crypto.decrypt(key, sealed, b"1|0|site-1->site-2") == b"share"
    with pytest.raises(SecAggError, match="does not open"):
        crypto.decrypt(key, sealed, b"1|0|site-1->site-3")
    with pytest.raises(SecAggError, match="public key has 32 bytes"):
        first.agree(b"short", info)


def test_the_threshold_is_never_a_minority_nor_below_two():
    assert [protocol.effective_threshold(0, n) for n in (2, 3, 4, 6, 7)] == [2, 2, 3, 4, 4]
    assert protocol.effective_threshold(5, 6) == 5
