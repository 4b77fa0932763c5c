"""Secure aggregation over the real RabbitMQ node, the server and the sites as separate processes:
hello-numpy-secagg's exact weights, and a site whose process dies mid-round after the masks were agreed."""

from __future__ import annotations

import numpy as np
import pytest

from fl_broker.cli.flow import run_job, shutdown_all, wait_for_clients
from fl_broker.protocol.control import RequestClient
from fl_broker.transport import connect
from tests.secagg.harness import SECAGG_APP, check_rounds, noisy_app, sites
from tests.support.federation import ProcessFederation
from tests.support.processes import assert_exited_cleanly, spawn

pytest.importorskip("cryptography")
pytestmark = pytest.mark.rabbitmq

INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)


def test_hello_numpy_secagg_with_separate_processes(tmp_path, rabbitmq_url, processes):
    processes.append(spawn(tmp_path, "server", broker=rabbitmq_url))
    for site in sites(2):
        processes.append(spawn(tmp_path, "worker", "--site", site, "--heartbeat-interval", "1", broker=rabbitmq_url))
    admin = RequestClient(connect(rabbitmq_url))
    try:
        wait_for_clients(admin, 2, timeout=60, on_status=lambda s: None)
        result = run_job(admin, SECAGG_APP, run=1, on_status=lambda s: None, timeout=120)
        shutdown_all(admin)
    finally:
        admin.close()
        admin.transport.close()
    assert result.phase == "finished"
    assert_exited_cleanly(processes)
    final = np.load(tmp_path / "server" / "run_1" / "models" / "server.npy")
    assert final.dtype == np.float32
    np.testing.assert_array_equal(final, INITIAL + 10)
    assert (tmp_path / "server" / "log.txt").read_text().count("aggregated 2 masked updates") == 10


def test_a_site_process_that_dies_mid_round_is_recovered_from_on_rabbitmq(tmp_path, rabbitmq_url):
    app = noisy_app(
        tmp_path / "app",
        size=5000,
        num_rounds=3,
        server_args={"min_clients": 3},
        drop_site="site-4",
        drop_round=1,
        drop_how="exit",
    )
    federation = ProcessFederation(tmp_path / "ws", rabbitmq_url, program_args=("--chunk-size", "16K"))
    try:
        federation.start_server()
        federation.start_workers(sites(4))
        federation.start_job(app)
        status = federation.wait_finished()
        assert status["phase"] == "finished", status
        assert federation.wait_exit("site-4", timeout=5) == 3  # it died in round 1's train task
    finally:
        federation.close()
    workspace = tmp_path / "ws"
    check_rounds(workspace, 4, 3, dropped={1: "site-4", 2: "site-4"})
    server_log = federation.log("server")
    assert "round 1: site-4 dropped out after the masks were agreed" in server_log
    assert "round 1: removed the masks of site-4, which dropped out" in server_log
