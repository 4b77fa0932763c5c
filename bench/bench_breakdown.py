"""Where a large-model round goes: its phases (from the server's lifecycle events) and the CPU seconds each
process spent on it (from /proc), per round after the first.

    python bench/bench_breakdown.py                       # 10M floats x 8 clients, 4 rounds, private node
    python bench/bench_breakdown.py --size 50000000 --clients 2 --rounds 3 --py-spy /tmp/spy
    python bench/bench_breakdown.py --size 9 --clients 2 --rounds 150    # hello-numpy-sag itself (3x3)

Phases of a round, from the server's events: `to first result` (the task's broadcast, a client's training
and its upload, until the server takes the first result), `other results` (until the last result is
accepted: the uploads the server receives one after another), `aggregate`, `update` (the generator's new
model and its checks), `save` (the checkpoint and the persistor's file) and `rest` (until round_done and the
next round_started). CPU: user + system seconds of the server, all workers together and the RabbitMQ node,
sampled every 50 ms from /proc/PID/stat, over the rounds after the first, per round (a long run: over the
rounds whose events fl.event.history still holds, its last 1000). With --py-spy DIR, the
server and the first worker are sampled by py-spy (raw folded stacks, per thread, idle samples dropped).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_rounds import make_app, run_events, start_federation, stop_processes  # noqa: E402
from bench.compare.model import HELLO_SIZE  # noqa: E402
from fl_broker.cli.flow import run_job, shutdown_all, wait_for_clients  # noqa: E402
from fl_broker.ops.localnode import LocalNode  # noqa: E402
from fl_broker.protocol.control import RequestClient  # noqa: E402
from fl_broker.transport import connect  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
PHASES = ("to first result", "other results", "aggregate", "update", "save", "rest")


def cpu_seconds(pid: int, tid: int | None = None) -> float | None:
    """User + system CPU seconds of `pid` (or of its thread `tid`) so far (None once it is gone)."""
    path = Path(f"/proc/{pid}/stat") if tid is None else Path(f"/proc/{pid}/task/{tid}/stat")
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of `pid` so far, by thread id."""
    found = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        seconds = cpu_seconds(pid, int(task.name))
        if seconds is not None:
            found[int(task.name)] = seconds
    return found


class CpuSampler:
    """Samples the CPU seconds of named process groups on a thread: `at(t)` is each group's total at wall time t."""

    def __init__(self, groups: dict[str, list[int]], threads_of: int, interval: float = 0.05) -> None:
        self.groups = groups
        self.threads_of = threads_of  # a pid whose threads are sampled one by one too (the server)
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float], dict[int, float]]] = []
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            totals = {}
            for name, pids in self.groups.items():
                for pid in pids:
                    seconds = cpu_seconds(pid)
                    if seconds is not None:
                        self._last[pid] = seconds
                totals[name] = sum(self._last.get(pid, 0.0) for pid in pids)
            self.samples.append((time.time(), totals, thread_cpu(self.threads_of)))

    def at(self, when: float) -> tuple[dict[str, float], dict[int, float]]:
        """Each group's and each sampled thread's CPU seconds at the first sample at or after `when` (the
        last one if none is)."""
        for stamp, totals, threads in self.samples:
            if stamp >= when:
                return totals, threads
        return self.samples[-1][1], self.samples[-1][2]


def phases(events: list[dict]) -> list[dict[str, float]]:
    """Per round (in order): seconds of each of PHASES, from the server's lifecycle events (NaN for a phase
    whose events are missing)."""
    by_round: dict[int, dict[str, list[float]]] = {}
    for event in events:
        if event.get("round") is not None:
            by_round.setdefault(event["round"], {}).setdefault(event["type"], []).append(event["time"])
    # The history queue keeps the last EVENT_HISTORY_LENGTH events: a long run's first rounds are cut off.
    rounds = sorted(r for r, seen in by_round.items() if "round_started" in seen and "round_done" in seen)
    return [_round_phases(by_round[r], by_round.get(r + 1, {})) for r in rounds]


def _round_phases(seen: dict[str, list[float]], following: dict[str, list[float]]) -> dict[str, float]:
    def at(kind: str, pick=min) -> float:  # type: ignore[no-untyped-def]
        return pick(seen[kind]) if kind in seen else float("nan")

    end = following.get("round_started", seen["round_done"])[0]
    first, last = at("before_contribution_accept"), at("after_contribution_accept", max)
    return {
        "to first result": first - seen["round_started"][0],
        "other results": last - first,
        "aggregate": at("after_aggregation") - at("before_aggregation"),
        "update": at("after_shareable_to_learnable") - at("after_aggregation"),
        "save": at("after_learnable_persist") - at("before_learnable_persist"),
        "rest": end - at("after_learnable_persist"),
        "_start": seen["round_started"][0],
        "_end": end,
    }


def py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` into `out` (raw folded stacks, one line per thread and stack)."""
    spy = Path(sys.executable).parent / "py-spy"
    command = [str(spy), "record", "-p", str(pid), "-r", "200", "-t", "-f", "raw", "-o", str(out), "--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(args: argparse.Namespace, node: LocalNode, work: Path) -> None:
    vhost = f"bd-{uuid.uuid4().hex[:8]}"
    url = node.create_vhost(vhost)
    # 9 weights: hello-numpy-sag itself (its 3x3 model and persistor), as bench.compare's 3x3 rows run it
    app = make_app(work, clients=args.clients, rounds=args.rounds, size=None if args.size == HELLO_SIZE else args.size)
    processes = start_federation(work / "ws", url, args.clients, "WARNING")
    spies: list[subprocess.Popen[bytes]] = []
    groups = {"server": [processes[0].pid], "workers": [p.pid for p in processes[1:]], "broker": node.pids()}
    transport = connect(url)
    admin = RequestClient(transport)
    try:
        if args.py_spy:
            args.py_spy.mkdir(parents=True, exist_ok=True)
            spies = [
                py_spy(processes[0].pid, args.py_spy / "server.txt"),
                py_spy(processes[1].pid, args.py_spy / "worker.txt"),
            ]
        with CpuSampler(groups, processes[0].pid) as sampler:
            wait_for_clients(admin, args.clients, timeout=300, on_status=lambda s: None)
            result = run_job(admin, app, run=1, on_status=lambda s: None, poll=0.2, timeout=3600)
        events = run_events(transport, 1)
        shutdown_all(admin)
    finally:
        admin.close()
        transport.close()
        stop_processes(processes)
        for spy in spies:
            spy.wait(30)
    report(result.phase, phases(events), sampler, args)


def report(phase: str, rounds: list[dict[str, float]], sampler: CpuSampler, args: argparse.Namespace) -> None:
    later = rounds[1:]
    print(f"{args.size / 1e6:g}M floats x {args.clients} clients, {args.rounds} rounds: {phase}")
    for name in PHASES:
        values = [r[name] for r in later]
        print(f"  {name:<16} {sum(values) / len(values):7.3f} s   ({' '.join(f'{v:.3f}' for v in values)})")
    wall = (later[-1]["_end"] - later[0]["_start"]) / len(later)
    print(f"  {'round':<16} {wall:7.3f} s")
    (start, threads_start), (end, _) = sampler.at(later[0]["_start"]), sampler.at(later[-1]["_end"])
    cpu = {name: (end[name] - start[name]) / len(later) for name in start}
    # Threads up to the last round's start: the workflow's thread is gone once the run has ended.
    threads_end = sampler.at(later[-1]["_start"])[1]
    counted = max(1, len(later) - 1)
    print("  CPU per round: " + ", ".join(f"{name} {seconds:.4f} s" for name, seconds in cpu.items()))
    print(f"  CPU total {sum(cpu.values()):.4f} s per round on {os.cpu_count()} cores")
    print(
        "  server threads (CPU s per round, by thread id; py-spy's output names them): "
        + ", ".join(
            f"{tid} {(seconds - threads_start.get(tid, 0.0)) / counted:.4f}"
            for tid, seconds in sorted(threads_end.items(), key=lambda kv: -(kv[1] - threads_start.get(kv[0], 0.0)))[:6]
        )
    )
    print("  load average: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000_000, help="float32 weights of the model")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4, help="at least 2: the first round is not counted")
    parser.add_argument("--py-spy", type=Path, help="sample the server and the first worker with py-spy into DIR")
    parser.add_argument("--repeat", type=int, default=1, help="runs, one after another on the same node")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-breakdown-") as tmp:
        node = LocalNode(Path(tmp) / "rabbitmq").start()
        try:
            for index in range(args.repeat):
                run(args, node, Path(tmp) / f"run-{index}")
        finally:
            node.stop()


if __name__ == "__main__":
    main()
