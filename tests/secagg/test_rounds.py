"""One secure-aggregation round driven by hand, without a transport: the sites' sessions, the server's key
round and masked sum, with dropouts at each point and servers that ask for too much."""

from __future__ import annotations

import numpy as np
import pytest

from fl_broker.errors import SecAggError
from fl_broker.fl.aggregation import weighted_mean
from fl_broker.wire.messages import DXO, DataKind, MetaKey

pytest.importorskip("cryptography")

from fl_broker.secagg import protocol, ring  # noqa: E402
from fl_broker.secagg.coordinator import KeyRound  # noqa: E402
from fl_broker.secagg.masked_sum import MaskedSum  # noqa: E402
from fl_broker.secagg.session import SiteRound  # noqa: E402

SITES = [f"site-{i}" for i in range(1, 7)]
BITS = 16


def model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {"w": rng.normal(0, 1, 20_000).astype(np.float32), "b": rng.normal(0, 1, (3, 3)).astype(np.float32)}


def updates() -> dict[str, dict[str, np.ndarray]]:
    base = model()
    out = {}
    for index, site in enumerate(SITES):
        rng = np.random.default_rng(index)
        out[site] = {name: (value + rng.normal(0, 0.5, value.shape)).astype(np.float32) for name, value in base.items()}
    return out


def collection(data: dict) -> DXO:
    return DXO(data_kind=DataKind.COLLECTION, data=data)


def agree_keys(sites: list[str], threshold: int = 0) -> tuple[KeyRound, dict[str, SiteRound]]:
    """Phases 1 and 2 with every site answering."""
    keys = KeyRound(run=1, round=0, configured_threshold=threshold)
    sessions = {site: SiteRound(site=site, run=1, round=0) for site in sites}
    keys.take_keys({s: keys.parse_keys(s, collection(sessions[s].advertise())) for s in sites})
    fields = keys.share_fields()
    keys.take_sealed({s: keys.parse_sealed(s, collection({"sealed": sessions[s].share(fields)})) for s in sites})
    return keys, sessions


def masked_update(session: SiteRound, update: dict[str, np.ndarray], weight: float, fields: dict) -> DXO:
    session.open_shares(fields)
    masked = {n: ring.quantize(v, weight, BITS, len(session.maskers), n) for n, v in update.items()}
    session.mask(masked)
    meta = {MetaKey.NUM_STEPS_CURRENT_ROUND: weight, protocol.DATA_KIND_META: "WEIGHTS"}
    return DXO(data_kind=DataKind.COLLECTION, data=masked, meta=meta)


def secure_round(sending: list[str], answering: list[str] | None = None, threshold: int = 0):
    """A whole round in which every site agrees keys, only `sending` send their masked update, and only
    `answering` (default: the senders) reveal shares. The aggregate, the masked updates the server saw."""
    plain, weights = updates(), {site: float(i + 1) for i, site in enumerate(SITES)}
    keys, sessions = agree_keys(SITES, threshold)
    fields = keys.train_fields(BITS)
    total = MaskedSum(fraction_bits=BITS, expected_data_kind=DataKind.WEIGHTS, max_num_steps=100)
    total.begin(model())
    seen = {}
    for site in sending:
        seen[site] = masked_update(sessions[site], plain[site], weights[site], fields)
        assert total.accept(site, seen[site]) is None
    survivors = sorted(total.contributors)
    unmask = keys.unmask_fields(survivors)
    reveals = {
        s: keys.parse_reveal(s, collection(sessions[s].reveal(unmask)), survivors) for s in (answering or survivors)
    }
    keys.remove_masks(total.sums, reveals, survivors)
    total.unmasked = True
    return total.aggregate(), seen, plain, weights


def test_the_secure_aggregate_is_plain_fedavg_within_the_quantization_step():
    aggregate, seen, plain, weights = secure_round(SITES)
    expected = weighted_mean((plain[site], weights[site]) for site in SITES)
    assert aggregate.data_kind == DataKind.WEIGHTS and sorted(aggregate.data) == ["b", "w"]
    for name in ("w", "b"):
        assert aggregate.data[name].dtype == np.float32
        np.testing.assert_allclose(aggregate.data[name], expected[name], rtol=0, atol=2**-BITS)


def test_no_masked_update_correlates_with_the_update_it_hides():
    _, seen, plain, weights = secure_round(SITES)
    for site, dxo in seen.items():
        masked = dxo.data["w"].view(np.int64).astype(np.float64)
        clear = ring.quantize(plain[site]["w"], weights[site], BITS, 6, "w").view(np.int64).astype(np.float64)
        assert abs(np.corrcoef(masked, plain[site]["w"])[0, 1]) < 0.05
        assert np.corrcoef(clear, plain[site]["w"])[0, 1] > 0.999  # what the server would see unmasked
        assert np.count_nonzero(dxo.data["w"] == ring.quantize(plain[site]["w"], weights[site], BITS, 6, "w")) < 3


def test_sites_that_drop_after_agreeing_masks_have_their_masks_removed():
    survivors = ["site-1", "site-3", "site-4", "site-6"]
    aggregate, _, plain, weights = secure_round(survivors)
    expected = weighted_mean((plain[site], weights[site]) for site in survivors)
    np.testing.assert_allclose(aggregate.data["w"], expected["w"], rtol=0, atol=2**-BITS)
    assert aggregate.meta["contributors"] == survivors


def test_a_survivor_that_does_not_reveal_is_not_needed_beyond_the_threshold():
    survivors = ["site-1", "site-2", "site-3", "site-4", "site-5"]
    aggregate, _, plain, weights = secure_round(survivors, answering=["site-2", "site-3", "site-5", "site-1"])
    expected = weighted_mean((plain[site], weights[site]) for site in survivors)
    np.testing.assert_allclose(aggregate.data["b"], expected["b"], rtol=0, atol=2**-BITS)


def test_fewer_survivors_than_the_threshold_fail_the_round_naming_the_dropped_sites():
    with pytest.raises(
        SecAggError, match=r"3 of 6 masked updates arrived, below the threshold 4; .*site-2, site-4, site-6"
    ):
        secure_round(["site-1", "site-3", "site-5"])
    with pytest.raises(SecAggError, match="only 3 survivors revealed their shares, the threshold is 4"):
        secure_round(SITES, answering=["site-1", "site-2", "site-3"])


def test_a_site_reveals_one_view_of_the_round_only():
    keys, sessions = agree_keys(SITES)
    fields = keys.train_fields(BITS)
    for session in sessions.values():
        session.open_shares(fields)
    everyone = {"survivors": SITES, "dropped": []}
    sessions["site-1"].reveal(everyone)
    assert sessions["site-1"].reveal(everyone)  # the same request again (a redelivery): the same answer
    # The server, having the self-mask shares of every site, now claims site-2 dropped to get its key too.
    with pytest.raises(SecAggError, match="asked again for round 0 with other survivors"):
        sessions["site-1"].reveal({"survivors": [s for s in SITES if s != "site-2"], "dropped": ["site-2"]})
    with pytest.raises(SecAggError, match="must split the maskers"):
        sessions["site-3"].reveal({"survivors": SITES[:4], "dropped": []})
    with pytest.raises(SecAggError, match="fewer than the threshold"):
        sessions["site-3"].reveal({"survivors": SITES[:3], "dropped": SITES[3:]})


def test_sites_refuse_a_low_threshold_or_keys_the_server_swapped():
    keys, sessions = agree_keys(SITES[:4])
    low = {**keys.share_fields(), "threshold": 2}
    fresh = SiteRound(site="site-1", run=1, round=0)
    with pytest.raises(SecAggError, match="threshold 2 for 4 holders; it must be 3 .. 4"):
        sessions["site-1"].share(low)
    swapped = keys.share_fields()
    swapped["public_keys"]["site-1"] = {"c": fresh.advertise()["c"], "s": fresh.advertise()["s"]}
    with pytest.raises(SecAggError, match="not the ones it advertised"):
        sessions["site-1"].share(swapped)


def test_a_changed_sealed_share_does_not_open():
    keys, sessions = agree_keys(SITES[:3])
    fields = keys.train_fields(BITS)
    box = bytearray(fields["sealed"]["site-2"]["site-1"])
    box[-1] ^= 1
    fields["sealed"]["site-2"]["site-1"] = bytes(box)
    with pytest.raises(SecAggError, match="does not open"):
        sessions["site-1"].open_shares(fields)


def test_the_masked_sum_refuses_updates_that_do_not_fit():
    total = MaskedSum(fraction_bits=BITS, expected_data_kind=DataKind.WEIGHTS, max_num_steps=10)
    total.begin(model())
    good = {"w": np.zeros(20_000, np.uint64), "b": np.zeros((3, 3), np.uint64)}
    meta = {MetaKey.NUM_STEPS_CURRENT_ROUND: 1, protocol.DATA_KIND_META: "WEIGHTS"}
    assert "names" in total.accept("s", DXO(DataKind.COLLECTION, {"w": good["w"]}, meta))
    assert "uint64 array" in total.accept("s", DXO(DataKind.COLLECTION, {**good, "b": np.zeros(9, np.uint64)}, meta))
    assert "outside 0 .. 10" in total.accept(
        "s", DXO(DataKind.COLLECTION, good, {**meta, "NUM_STEPS_CURRENT_ROUND": 11})
    )
    assert "is 'WEIGHT_DIFF'" in total.accept(
        "s", DXO(DataKind.COLLECTION, good, {**meta, "secagg_data_kind": "WEIGHT_DIFF"})
    )
    assert "COLLECTION" in total.accept("s", DXO(DataKind.WEIGHTS, good, meta))
    assert total.accept("s", DXO(DataKind.COLLECTION, good, meta)) is None
    with pytest.raises(Exception, match="masks were not removed"):
        total.aggregate()
