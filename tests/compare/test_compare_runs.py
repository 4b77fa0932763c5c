"""bench/compare's runners: how a run that ends well, hangs, fails, is killed or runs the machine out of memory
is reported, and that nothing it started is left running. Flower itself is stood in for by
fake_flower_job.py; fl-broker runs for real over the suite's RabbitMQ node."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from bench.compare import flbroker_runner, flower_runner
from bench.compare.rows import FAILED, OK, OUT_OF_MEMORY, TIMEOUT, WRONG_WEIGHTS, Row

FAKE_JOB = Path(__file__).resolve().parent / "fake_flower_job.py"
SMALL = Row("3x3-2", 9, 2, 3, 30)


def fake(**kw: float) -> flower_runner.FlowerOptions:
    return flower_runner.FlowerOptions(Path(sys.executable), job=FAKE_JOB, interval=0.1, **kw)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("run", [flower_runner.run_simulation, flower_runner.run_grpc])
def test_a_run_with_the_right_final_weights_is_ok(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_JOB", "ok")
    outcome = run(SMALL, tmp_path, fake())
    assert outcome.status == OK, outcome.detail
    assert outcome.seconds_per_round == pytest.approx(0.0075, abs=1e-4)  # (2 * 0.01 + 0.005) / 2 rounds
    assert outcome.round_seconds == [pytest.approx(0.005)] * 3
    assert outcome.peak_pss_mib and outcome.peak_pss_mib > 1


def test_a_hanging_run_times_out_and_leaves_no_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_JOB", "sleep")
    started = time.monotonic()
    outcome = flower_runner.run_simulation(Row("3x3-2", 9, 2, 3, 3), tmp_path, fake())
    assert outcome.status == TIMEOUT
    assert time.monotonic() - started < 20
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    assert not alive(grandchild), "a process that left the run's process group was left running"


def test_the_memory_floor_stops_a_run_as_out_of_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_JOB", "sleep")
    outcome = flower_runner.run_grpc(Row("3x3-2", 9, 2, 3, 60), tmp_path, fake(min_free_mib=10**9))
    assert outcome.status == OUT_OF_MEMORY
    assert "MiB free" in outcome.detail


@pytest.mark.parametrize(
    ("behaviour", "status", "detail"),
    [
        ("wrong", WRONG_WEIGHTS, "9 of 9 final weights differ from initial + 3"),
        ("sigkill", OUT_OF_MEMORY, "1 process(es) got SIGKILL"),  # nobody here sent it: the kernel's OOM killer
        ("fail", FAILED, "exit code 1: sim.log: ValueError: boom"),
    ],
)
def test_a_run_that_went_wrong_says_how(
    behaviour: str, status: str, detail: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_JOB", behaviour)
    outcome = flower_runner.run_simulation(SMALL, tmp_path, fake())
    assert (outcome.status, outcome.detail) == (status, detail)


@pytest.mark.rabbitmq
def test_fl_broker_row_over_rabbitmq(rabbitmq_node, rabbitmq_url: str, tmp_path: Path) -> None:
    broker = rabbitmq_node.node.pids() if rabbitmq_node.node else []
    outcome = flbroker_runner.run_row(
        SMALL, rabbitmq_url, tmp_path, broker_pids=lambda: broker, interval=0.2, min_free_mib=0
    )
    assert outcome.status == OK, outcome.detail
    assert outcome.seconds_per_round and 0 < outcome.seconds_per_round < 5
    assert len(outcome.round_seconds) == 3
    assert outcome.peak_processes.get("python") == 3  # the server and two workers
    # each process's peak RSS, read before they exit: a python with numpy and pika is tens of MiB at least
    assert outcome.server_peak_rss_mib and 30 < outcome.server_peak_rss_mib < 2000
    assert outcome.worker_peak_rss_mib and 30 < outcome.worker_peak_rss_mib < 2000
    if broker:
        assert "beam.smp" in outcome.peak_processes
        assert outcome.peak_pss_mib and outcome.peak_pss_mib > 50  # a RabbitMQ node alone is more


@pytest.mark.rabbitmq
def test_fl_broker_run_past_its_deadline_is_a_timeout(rabbitmq_url: str, tmp_path: Path) -> None:
    row = Row("3x3-2", 9, 2, 100_000, 4)
    outcome = flbroker_runner.run_row(row, rabbitmq_url, tmp_path, broker_pids=list, interval=0.2, min_free_mib=0)
    assert outcome.status == TIMEOUT, outcome.detail
    assert outcome.wall_seconds < 30


@pytest.mark.slow
@pytest.mark.skipif(not (flower_runner.VENV / "bin" / "python").exists(), reason="no bench/compare/.venv-flower")
@pytest.mark.parametrize("run", [flower_runner.run_simulation, flower_runner.run_grpc])
def test_real_flower_row(run, tmp_path: Path) -> None:
    os.environ.pop("FAKE_JOB", None)
    outcome = run(SMALL, tmp_path, flower_runner.FlowerOptions(flower_runner.VENV / "bin" / "python"))
    assert outcome.status == OK, outcome.detail
    assert outcome.seconds_per_round and outcome.seconds_per_round > 0
