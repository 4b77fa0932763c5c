"""fl-broker's run of one comparison row: the server and the workers as separate `fl-broker` processes over
a real RabbitMQ node, driven and timed as bench/bench_rounds.py does (its app, processes and event reader).

Round times come from the server's own lifecycle events (round_started / round_done, wall clock); the final
model is the server's saved `server.npy`; memory is the PSS of the server, the workers and the broker node,
and the peak RSS (VmHWM) of the server and of the largest worker, read once the job has finished.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.bench_rounds import make_app, proc_status, run_events, start_federation, stop_processes
from bench.compare.memwatch import MemoryWatch
from bench.compare.model import HELLO_SIZE
from bench.compare.rows import FAILED, OK, OUT_OF_MEMORY, TIMEOUT, Outcome, Row, judge
from fl_broker.cli.flow import JobFailed, run_job, shutdown_all, wait_for_clients
from fl_broker.protocol.control import RequestClient
from fl_broker.transport import Transport, connect

SYSTEM = "fl-broker"


class _MemoryTripped(Exception):
    """The machine ran low on memory during the run."""


def round_times(events: list[dict]) -> tuple[list[float], list[float]]:
    """Wall-clock start and end of every round, in round order, from the server's lifecycle events."""
    started = {e["round"]: e["time"] for e in events if e["type"] == "round_started"}
    done = {e["round"]: e["time"] for e in events if e["type"] == "round_done"}
    rounds = sorted(set(started) & set(done))
    return [started[r] for r in rounds], [done[r] for r in rounds]


def run_row(
    row: Row, url: str, work: Path, *, broker_pids: Callable[[], list[int]], interval: float, min_free_mib: float
) -> Outcome:
    """Run `row` on the broker at `url` (a fresh virtual host); `broker_pids()` are the broker's processes.
    A timeout, a failure or a memory trip comes back as the Outcome's status; nothing started is left running."""
    app = make_app(work, clients=row.clients, rounds=row.rounds, size=None if row.size == HELLO_SIZE else row.size)
    begun = time.monotonic()
    processes = start_federation(work / "ws", url, row.clients, "WARNING")
    watch = MemoryWatch(
        lambda: [p.pid for p in processes] + broker_pids(), interval=interval, min_free_mib=min_free_mib
    )
    outcome = None
    try:
        with watch:
            outcome = _administer(row, app, url, watch, begun + row.timeout, processes)
    finally:
        if outcome is None or outcome.status != OK:  # a stuck server would not answer a shutdown
            _kill(processes)
        stop_processes(processes)
    outcome.wall_seconds = round(time.monotonic() - begun, 2)
    outcome.peak_pss_mib, outcome.peak_processes = round(watch.peak_mib, 1), watch.peak_processes
    return outcome


def _administer(
    row: Row, app: Path, url: str, watch: MemoryWatch, deadline: float, processes: list[subprocess.Popen[bytes]]
) -> Outcome:
    """As the admin: run the job, read its round times and its processes' peak RSS, and shut the federation
    down if it went well."""
    transport = connect(url)
    admin = RequestClient(transport)
    try:
        outcome = _drive(row, app, admin, transport, watch, deadline)
        outcome.server_peak_rss_mib, outcome.worker_peak_rss_mib = peak_rss(processes)
        if outcome.status == OK:
            shutdown_all(admin)
        return outcome
    finally:
        admin.close()
        transport.close()


def _drive(
    row: Row, app: Path, admin: RequestClient, transport: Transport, watch: MemoryWatch, deadline: float
) -> Outcome:
    def on_status(status: dict) -> None:
        if watch.tripped.is_set():
            raise _MemoryTripped

    try:
        wait_for_clients(admin, row.clients, timeout=max(1.0, deadline - time.monotonic()), on_status=on_status)
        result = run_job(admin, app, run=1, on_status=on_status, poll=0.2, timeout=deadline - time.monotonic())
    except _MemoryTripped:
        return Outcome(
            SYSTEM, row.name, OUT_OF_MEMORY, detail=f"stopped: the machine had < {watch.min_free_mib:g} MiB free"
        )
    except JobFailed as exc:
        status = TIMEOUT if time.monotonic() >= deadline else FAILED
        return Outcome(SYSTEM, row.name, status, detail=str(exc))
    if result.phase != "finished":
        return Outcome(SYSTEM, row.name, FAILED, detail=f"the run ended {result.phase}")
    started, done = round_times(run_events(transport, 1))
    weights = np.load(app.parent / "ws" / "server" / "run_1" / "models" / "server.npy", mmap_mode="r")
    return judge(SYSTEM, row, started, done, weights)


def peak_rss(processes: list[subprocess.Popen[bytes]]) -> tuple[float | None, float | None]:
    """(the server's, the largest worker's) peak RSS in MiB; the server is the first process. None for one
    that has exited (its /proc entry is gone)."""
    peaks = []
    for proc in processes:
        try:
            peaks.append(proc_status(proc.pid, "VmHWM") / 1024)
        except OSError:
            peaks.append(None)
    workers = [peak for peak in peaks[1:] if peak is not None]
    return peaks[0] if peaks else None, max(workers) if workers else None


def _kill(processes: list[subprocess.Popen[bytes]]) -> None:
    """A run that did not end cleanly leaves nothing behind: its processes are killed, not asked to stop."""
    for proc in processes:
        if proc.poll() is None:
            proc.kill()
