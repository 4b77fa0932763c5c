"""Many clients and multi-chunk models on a real RabbitMQ node, as separate processes.

Small chunks (64 KiB) make it cheap to have far more result chunks in flight than any consumer's prefetch
window: the shape in which the server's result queue used to deadlock (every client's upload interleaved,
the window full of partial results, nothing able to complete)."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.federation import ProcessFederation, make_app

pytestmark = pytest.mark.rabbitmq

SIZE = 250_000  # float32 weights: 1 MB, 16 chunks of 64 KiB per task and per result
# With a 2 MiB body limit the old held-chunk consumer had a prefetch of 36 chunks, against 16 x 16 in flight.
PROGRAM_ARGS = ("--chunk-size", "64K", "--max-body-size", "2M")


def initial() -> np.ndarray:
    return (np.arange(SIZE) % 251).astype(np.float32)


def every_site_app(folder: Path, clients: int, rounds: int, size: int) -> Path:
    """hello-numpy-sag on a vector of `size` weights whose every round waits for all `clients` sites."""
    return make_app(
        folder,
        server_args={"min_clients": clients, "num_rounds": rounds, "wait_time_after_min_received": 60},
        persistor_args={"size": size},
    )


def final_model(fed: ProcessFederation) -> np.ndarray:
    return np.load(fed.workspace / "server" / "run_1" / "models" / "server.npy")


def test_sixteen_clients_with_multi_chunk_results_finish_exactly_and_in_time(tmp_path, rabbitmq_url):
    clients, rounds = 16, 3
    fed = ProcessFederation(tmp_path / "ws", rabbitmq_url, program_args=PROGRAM_ARGS)
    try:
        fed.start_server()
        fed.start_workers([f"site-{i}" for i in range(1, clients + 1)])
        app = every_site_app(tmp_path, clients, rounds, SIZE)
        started = time.monotonic()
        fed.start_job(app)
        status = fed.wait_finished(timeout=240)
        elapsed = time.monotonic() - started
        assert status["phase"] == "finished"
        np.testing.assert_array_equal(final_model(fed), initial() + rounds)
        accepted = fed.accepted_per_round()
        assert {r: len(sites) for r, sites in accepted.items()} == {r: clients for r in range(rounds)}
        assert all(len(set(sites)) == clients for sites in accepted.values())
        assert elapsed < 180, f"{rounds} rounds took {elapsed:.0f} s"
        assert not list((fed.workspace / "server" / "spool" / "results").glob("*.data")), "spool left behind"
    finally:
        fed.close()


def test_server_killed_while_results_are_half_received_resumes_exactly_and_counts_each_once(tmp_path, rabbitmq_url):
    clients, rounds, size = 4, 6, 1_000_000  # 4 MB results: 62 chunks each
    fed = ProcessFederation(
        tmp_path / "ws", rabbitmq_url, client_grace=5.0, program_args=("--chunk-size", "64K", "--max-body-size", "8M")
    )
    try:
        fed.start_server()
        fed.start_workers([f"site-{i}" for i in range(1, clients + 1)])
        app = every_site_app(tmp_path, clients, rounds, size)
        fed.start_job(app)
        spool = fed.workspace / "server" / "spool" / "results"
        fed.wait_for(lambda s: (s["current_round"] or 0) >= 2, what="round 2")
        deadline = time.monotonic() + 60
        while not list(spool.glob("*.data")):  # a result is being received, chunk by chunk
            assert time.monotonic() < deadline, "never saw a result half received"
            time.sleep(0.005)
        fed.kill("server", signal.SIGKILL)
        fed.start_server()
        status = fed.wait_finished(timeout=240)
        assert status["phase"] == "finished"
        expected = (np.arange(size) % 251).astype(np.float32) + rounds
        np.testing.assert_array_equal(np.load(fed.workspace / "server" / "run_1" / "models" / "server.npy"), expected)
        log = fed.log("server")
        assert "resuming run 1" in log
        # After the restart every round is counted with each site exactly once.
        after = log[log.rindex("resuming run 1") :]
        per_round: dict[int, list[str]] = {}
        for match in re.finditer(r"round (\d+): accepted result from (\S+) ", after):
            per_round.setdefault(int(match.group(1)), []).append(match.group(2))
        first = min(per_round)
        assert sorted(per_round) == list(range(first, rounds))
        assert all(sorted(sites) == sorted(f"site-{i}" for i in range(1, clients + 1)) for sites in per_round.values())
    finally:
        fed.close()
