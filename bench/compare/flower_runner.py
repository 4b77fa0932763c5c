"""Flower's runs of one comparison row, from the project's side: its own virtualenv (made on first use from
requirements-flower.txt), its processes (flower_job.py inside that virtualenv), a deadline and a memory guard.

Every process of a Flower run carries FL_COMPARE_TAG=<run id> in its environment, so Ray's processes count
(and are stopped) even if they leave the process tree of the driver. Telemetry of Flower and usage stats of
Ray are switched off: nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.compare.memwatch import MemoryWatch
from bench.compare.rows import FAILED, OUT_OF_MEMORY, TIMEOUT, Outcome, Row, judge
from fl_broker.ops.localnode import free_port

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-flower"
REQUIREMENTS = HERE / "requirements-flower.txt"
JOB = HERE / "flower_job.py"
_STAMP = VENV / "requirements.sha256"


class SetupError(RuntimeError):
    """The Flower virtualenv could not be made; the message says which step failed."""


def flower_python(base_python: str | None = None) -> Path:
    """The Flower virtualenv's python, after (re)installing it if requirements-flower.txt changed."""
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    python = VENV / "bin" / "python"
    if python.exists() and _STAMP.exists() and _STAMP.read_text().strip() == wanted:
        return python
    base = base_python or shutil.which("python3.11") or sys.executable
    print(f"compare: installing Flower into {VENV} (with {base}) ...", flush=True)
    for step in (
        [base, "-m", "venv", "--clear", str(VENV)],
        [str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
    ):
        proc = subprocess.run(step, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SetupError(f"{' '.join(step[:4])} ... failed: {proc.stderr.strip()[-800:]}")
    _STAMP.write_text(wanted + "\n")
    return python


def pinned() -> list[str]:
    """The requirement lines of requirements-flower.txt (what the Flower side runs)."""
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [line for line in lines if line]


@dataclass
class FlowerOptions:
    """How to run Flower: its python, the job script (tests give a stand-in), the memory sampling interval
    and the machine's free-memory floor."""

    python: Path
    job: Path = JOB
    interval: float = 0.5
    min_free_mib: float = 2048


class _Run:
    """The processes of one Flower run, tagged, watched, and stopped by their ids at the end."""

    def __init__(self, options: FlowerOptions, out: Path) -> None:
        self.options, self.out = options, out
        self.tag = f"FL_COMPARE_TAG={uuid.uuid4().hex}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.watch = MemoryWatch(
            lambda: [p.pid for p in self.processes],
            marker=self.tag,
            interval=options.interval,
            min_free_mib=options.min_free_mib,
        )

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        key, value = self.tag.split("=", 1)
        env.update({key: value, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"})
        with open(self.out / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                [str(self.options.python), str(self.options.job), *args, "--out", str(self.out)],
                cwd=HERE,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole
            )
        self.processes.append(proc)
        return proc

    def wait(self, proc: subprocess.Popen[bytes], deadline: float) -> str | None:
        """None once `proc` exited; TIMEOUT or OUT_OF_MEMORY if the deadline or the memory guard came first."""
        while proc.poll() is None:
            if self.watch.tripped.is_set():
                return OUT_OF_MEMORY
            if time.monotonic() >= deadline:
                return TIMEOUT
            time.sleep(0.1)
        return None

    def stop(self) -> None:
        """SIGKILL every process of the run that is still there: the groups it started and anything tagged."""
        for proc in self.processes:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for proc in self.processes:
            proc.wait()
        left = self.watch.pids()
        deadline = time.monotonic() + 10
        while left and time.monotonic() < deadline:  # SIGKILL takes effect soon, not at once
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
            left = {pid for pid in self.watch.pids() if not _zombie(pid)}


def _zombie(pid: int) -> bool:
    """Whether `pid` has exited and only waits for its parent to collect it (so it holds no memory)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def run_simulation(row: Row, work: Path, options: FlowerOptions) -> Outcome:
    """Flower's simulation engine (Ray), one driver process and the Ray processes it starts."""
    run = _Run(options, work)
    begun = time.monotonic()
    try:
        with run.watch:
            driver = run.start("sim", "sim", *_row_args(row))
            stopped = run.wait(driver, begun + row.timeout)
    finally:
        run.stop()
    return _outcome("flower-sim", row, run, driver, stopped, begun)


def run_grpc(row: Row, work: Path, options: FlowerOptions) -> Outcome:
    """Flower's legacy gRPC server and `row.clients` client processes on loopback."""
    run = _Run(options, work)
    port = free_port()
    begun = time.monotonic()
    deadline = begun + row.timeout
    try:
        with run.watch:
            server = run.start("server", "server", *_row_args(row), "--port", str(port))
            stopped = _wait_for_port(port, server, deadline)
            if stopped is None:
                for i in range(row.clients):
                    run.start(f"client-{i + 1}", "client", "--port", str(port))
                stopped = run.wait(server, deadline)
            for client in run.processes[1:] if stopped is None else []:
                run.wait(client, time.monotonic() + 30)  # they leave once the server ends the run; else killed
    finally:
        run.stop()
    return _outcome("flower-grpc", row, run, server, stopped, begun)


def _row_args(row: Row) -> list[str]:
    return ["--size", str(row.size), "--clients", str(row.clients), "--rounds", str(row.rounds)]


def _wait_for_port(port: int, server: subprocess.Popen[bytes], deadline: float) -> str | None:
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return None  # it died: _outcome reports how
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return None
        except OSError:
            time.sleep(0.2)
    return TIMEOUT


def _outcome(
    system: str, row: Row, run: _Run, main: subprocess.Popen[bytes], stopped: str | None, begun: float
) -> Outcome:
    outcome = _judge_files(system, row, run, main, stopped)
    outcome.wall_seconds = round(time.monotonic() - begun, 2)
    outcome.peak_pss_mib, outcome.peak_processes = round(run.watch.peak_mib, 1), run.watch.peak_processes
    return outcome


def _judge_files(system: str, row: Row, run: _Run, main: subprocess.Popen[bytes], stopped: str | None) -> Outcome:
    if stopped == TIMEOUT:
        return Outcome(system, row.name, TIMEOUT, detail=f"not done within {row.timeout:g} s")
    if stopped == OUT_OF_MEMORY:
        detail = f"stopped: the machine had < {run.options.min_free_mib:g} MiB free"
        return Outcome(system, row.name, OUT_OF_MEMORY, detail=detail)
    killed = [p for p in run.processes if p.returncode == -signal.SIGKILL]
    if killed:  # nobody here sent it: the kernel's OOM killer is the usual sender
        return Outcome(system, row.name, OUT_OF_MEMORY, detail=f"{len(killed)} process(es) got SIGKILL")
    result_file = run.out / "result.json"
    if main.returncode != 0 or not result_file.exists():
        return Outcome(system, row.name, FAILED, detail=f"exit code {main.returncode}: {_log_tail(run.out)}")
    result = json.loads(result_file.read_text())
    if any(result["failures"]) or any(n != row.clients for n in result["results"]):
        detail = f"results per round {result['results']}, failures {result['failures']}"
        return Outcome(system, row.name, FAILED, detail=detail)
    weights = np.load(run.out / "final.npy", mmap_mode="r")
    return judge(system, row, result["started"], result["done"], weights)


def _log_tail(out: Path) -> str:
    """The last non-empty line of any of the run's logs that mentions an error, or of the first log."""
    logs = sorted(out.glob("*.log"))
    for path in logs:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line or "error" in line]
        if errors:
            return f"{path.name}: {errors[-1].strip()[:300]}"
    return "no log" if not logs else f"{logs[0].name}: (no error line)"
