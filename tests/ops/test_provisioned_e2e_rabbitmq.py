"""hello-numpy-sag with provisioned, least-privilege broker users: server and workers as processes that get
their settings only from the env files `fl-broker provision` wrote (as the systemd units do)."""

from __future__ import annotations

import numpy as np
import pytest

from fl_broker.transport import connect
from tests.support.processes import assert_exited_cleanly, run_hello_job, spawn

pytestmark = pytest.mark.rabbitmq

INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)


def test_hello_numpy_sag_with_provisioned_users(provisioned, processes, tmp_path):
    ws = tmp_path / "ws"
    processes.append(spawn(ws, "server", env=provisioned.env("server")))
    for site in ("site-1", "site-2"):
        processes.append(spawn(ws, "worker", "--site", site, "--heartbeat-interval", "1", env=provisioned.env(site)))
    assert run_hello_job(connect(provisioned.url("admin"))).phase == "finished"
    assert_exited_cleanly(processes)
    np.testing.assert_array_equal(np.load(ws / "server" / "run_1" / "models" / "server.npy"), INITIAL + 10)
    for site in ("site-1", "site-2"):
        np.testing.assert_array_equal(np.load(ws / site / "run_1" / "model" / "best_numpy.npy"), INITIAL + 10)
        assert "ACCESS_REFUSED" not in (ws / site / "log.txt").read_text()
    assert "ACCESS_REFUSED" not in (ws / "server" / "log.txt").read_text()
