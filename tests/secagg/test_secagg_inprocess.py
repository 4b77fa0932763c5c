"""Secure aggregation end to end on the in-process transport: hello-numpy-secagg's exact weights, FedAvg
within the quantization step with 6 sites and chunked bodies, what the server saw, and a site dropping out
mid-round."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import numpy as np
import pytest

from fl_broker.cli import _make_worker, main
from fl_broker.cli.simulate import simulate
from fl_broker.secagg import ring
from fl_broker.secagg.masked_sum import MaskedSum
from tests.secagg.harness import ROOT, SECAGG_APP, ChunkedFederation, check_rounds, noisy_app, trace

pytest.importorskip("cryptography")

INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)


def test_hello_numpy_secagg_gives_the_exact_weights(tmp_path, capsys):
    assert main(["simulate", str(SECAGG_APP), "--clients", "2", "--workspace", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "run 1: finished" in out
    assert re.search(r"\[\[11\. 12\. 13\.\]\s+\[14\. 15\. 16\.\]\s+\[17\. 18\. 19\.\]\]", out)
    final = np.load(tmp_path / "server" / "run_1" / "models" / "server.npy")
    assert final.dtype == np.float32
    np.testing.assert_array_equal(final, INITIAL + 10)
    server_log = (tmp_path / "server" / "log.txt").read_text()
    assert server_log.count("aggregated 2 masked updates") == 10
    site_log = (tmp_path / "site-1" / "log.txt").read_text()
    assert len(re.findall(r"round \d: sending the masked update", site_log)) == 10


def test_six_sites_with_chunked_bodies_get_fedavg_and_the_server_sees_only_masked_updates(tmp_path, monkeypatch):
    seen: dict[tuple[int, str], np.ndarray] = {}
    accept = MaskedSum.accept

    def recording(self, site, dxo):  # what reaches the server's aggregator, by round and site
        seen[(len([k for k in seen if k[1] == site]), site)] = dxo.data["w"].copy()
        return accept(self, site, dxo)

    monkeypatch.setattr(MaskedSum, "accept", recording)
    app = noisy_app(tmp_path / "app", size=30_000, num_rounds=3, server_args={"min_clients": 6})
    federation = ChunkedFederation(tmp_path / "ws", 6, chunk_size=32 * 1024)  # masked update: 240 KB, 8 chunks
    try:
        assert federation.run(app).phase == "finished"
    finally:
        federation.close()
    workspace = tmp_path / "ws"
    check_rounds(workspace, 6, 3)
    assert len(seen) == 18
    for (current, site), masked in seen.items():
        plain = trace(workspace, site, current).plain
        assert plain is not None and masked.dtype == np.uint64
        assert abs(np.corrcoef(masked.view(np.int64).astype(np.float64), plain["w"])[0, 1]) < 0.05
        quantized = ring.quantize(plain["w"], float(site.split("-")[1]), 16, 6, "w")
        assert np.count_nonzero(masked == quantized) < 3


def test_a_site_that_drops_out_mid_round_has_its_masks_removed_and_later_rounds_go_on(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fl_broker.secagg")
    server_args = {"min_clients": 3}  # every site takes part in round 0, and round 1 goes on without site-3
    app = noisy_app(
        tmp_path / "app", size=2000, num_rounds=3, server_args=server_args, drop_site="site-3", drop_round=1
    )
    federation = ChunkedFederation(tmp_path / "ws", 4, chunk_size=8 * 1024)
    try:
        result = federation.run(app)
    finally:
        federation.close()
    assert result.phase == "finished"
    workspace = tmp_path / "ws"
    # Round 1 is the mean of the three others; in round 2 site-3 is still hung in round 1's task and is
    # left out at the key phase.
    check_rounds(workspace, 4, 3, dropped={1: "site-3", 2: "site-3"})
    server_log = caplog.text
    assert "round 1: site-3 dropped out after the masks were agreed" in server_log
    assert "round 1: removed the masks of site-3, which dropped out" in server_log
    assert "round 2, secagg_advertise_keys: no usable answer from site-3" in server_log


def test_too_few_survivors_fail_the_round_with_the_dropped_site_named(tmp_path, capsys):
    # Below min_clients the train phase ends only at train_timeout, as in ScatterAndGather.
    server_args = {"train_timeout": 2}
    app = noisy_app(tmp_path / "app", size=100, num_rounds=1, server_args=server_args, drop_site="site-2", drop_round=0)
    assert main(["simulate", str(app), "--clients", "2", "--workspace", str(tmp_path / "ws")]) == 1
    out = capsys.readouterr().out
    assert (
        "run 1: failed" in out
        and "round 0: 1 of 2 masked updates arrived, below the threshold 2; dropped out after the masks were "
        "agreed: site-2"
        in out
    )


def test_without_the_cryptography_package_simulate_says_so_in_one_line(tmp_path):
    code = (
        "import sys; sys.modules['cryptography'] = None\n"  # as if the secagg extra were not installed
        "from fl_broker.cli import main\n"
        f"sys.exit(main(['simulate', {str(SECAGG_APP)!r}, '--clients', '2', '--workspace', {str(tmp_path)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith("simulate failed: start_app failed: ConfigError: config_fed_server.json: workflows[0]")
    assert line.endswith("secure aggregation needs the 'cryptography' package: pip install 'fl-broker[secagg]'")
    assert "Traceback" not in done.stdout + done.stderr


def test_simulate_runs_the_app_in_one_process(tmp_path):
    result = simulate(SECAGG_APP, clients=3, workspace_root=tmp_path, make_worker=_make_worker)
    assert result.phase == "finished"
    np.testing.assert_array_equal(np.load(tmp_path / "server" / "run_1" / "models" / "server.npy"), INITIAL + 10)
