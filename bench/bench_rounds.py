"""Seconds per Scatter-and-Gather round over RabbitMQ with separate processes, and the server's peak RSS.

    python bench/bench_rounds.py            # starts a private RabbitMQ node
    python bench/bench_rounds.py --cases hello,10M-2,10M-8 --rounds-big 3
    python bench/bench_rounds.py --cluster 3 --cases hello,10M-8   # a private 3-node cluster, quorum queues

Cases: `hello` = hello-numpy-sag as shipped (2 clients, 10 rounds); `10M-N` = the same app with a
10M-float32 model (40 MB) and N clients. Round times come from the server's own lifecycle events
(fl.event.history): (training_finished - first round_started) / rounds. With `--cluster N` every program
gets all N URLs, the server starting at node 1 and the workers at the nodes in turn, and the queues are
quorum queues (`--queue-type`). After each case the RSS of every broker node is printed (now and peak),
and the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fl_broker.cli.flow import run_job, shutdown_all, wait_for_clients  # noqa: E402
from fl_broker.ops.cluster import LocalCluster  # noqa: E402
from fl_broker.ops.localnode import LocalNode  # noqa: E402
from fl_broker.protocol.control import RequestClient  # noqa: E402
from fl_broker.transport import connect  # noqa: E402
from fl_broker.wire import names  # noqa: E402
from fl_broker.wire.envelope import decode_envelope  # noqa: E402

APP = ROOT / "apps" / "hello-numpy-sag"

BIG_PERSISTOR = """
import numpy as np
from fl_broker.fl.persistor import ModelPersistor

class BigPersistor(ModelPersistor):
    def __init__(self, size: int = 10_000_000) -> None:
        self.size = size

    def load_model(self, context):
        return {"numpy_key": np.zeros(self.size, dtype=np.float32)}

    def save_model(self, model, context):
        folder = context.run_dir / "models"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "server.npy", model["numpy_key"])
"""


def make_app(folder: Path, *, clients: int, rounds: int, size: int | None, base: Path = APP) -> Path:
    """A copy of hello-numpy-sag (or of `base`) with the given client count, rounds and (optionally) a big
    model."""
    app = folder / (f"bench-{base.name}" if size else base.name)
    shutil.copytree(base, app)
    config_path = app / "config" / "config_fed_server.json"
    config = json.loads(config_path.read_text())
    config["workflows"][0]["args"].update(min_clients=clients, num_rounds=rounds)
    if size:
        (app / "custom").mkdir(exist_ok=True)  # hello-numpy-sag itself names built-ins only
        (app / "custom" / "big_persistor.py").write_text(BIG_PERSISTOR)
        config["components"][0] = {"id": "persistor", "path": "big_persistor.BigPersistor", "args": {"size": size}}
    config_path.write_text(json.dumps(config))
    return app


def proc_status(pid: int, key: str) -> int:
    """One numeric field of /proc/PID/status (VmRSS, VmHWM in KiB, Threads ...), -1 if absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def start_federation(
    workspace: Path, urls: str | list[str], clients: int, level: str, queue_type: str = "classic"
) -> list[subprocess.Popen[bytes]]:
    """The server (first) and `clients` workers as `fl-broker` processes; with several node URLs, process i
    is given them all, starting at node i % N."""
    urls = [urls] if isinstance(urls, str) else urls
    base = [sys.executable, "-m", "fl_broker.cli"]
    common = ["--workspace", str(workspace), "--log-level", level, "--queue-type", queue_type]
    sites = [["worker", "--site", f"site-{i}"] for i in range(1, clients + 1)]
    processes = []
    for i, args in enumerate([["server"], *sites]):
        first = i % len(urls)
        broker = ",".join(urls[first:] + urls[:first])
        processes.append(subprocess.Popen([*base, *args, *common, "--broker", broker], cwd=ROOT))
    return processes


def node_memory(nodes: list[LocalNode]) -> str:
    """Each broker node's RSS now and its peak (VmHWM), summed over its processes, in MB."""
    shown = []
    for node in nodes:
        pids = node.pids()
        now = sum(max(0, proc_status(pid, "VmRSS")) for pid in pids) / 1024
        peak = sum(max(0, proc_status(pid, "VmHWM")) for pid in pids) / 1024
        shown.append(f"{now:.0f}/{peak:.0f}")
    return "broker node RSS now/peak (MB): " + ", ".join(shown)


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    """Wait for each to exit after shutdown requests; kill what is still running after 30 s."""
    for proc in processes:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_events(transport, run: int) -> list[dict]:
    """Every lifecycle event of `run` in the server's event history (fields: type, round, data, time)."""
    events = []
    done = []

    def take(delivery):
        envelope = decode_envelope(delivery.body)
        if envelope.run == run:
            events.append(envelope.fields)
        delivery.ack()
        done.append(1)

    sub = transport.consume(names.EVENT_HISTORY_QUEUE, take)
    last = -1
    while len(done) != last:  # drain until quiet
        last = len(done)
        time.sleep(0.5)
    sub.cancel()
    return events


def round_seconds(transport, run: int) -> list[float]:
    """Per-round durations (ROUND_DONE `seconds`) and the run's wall time from the event history."""
    events = run_events(transport, run)
    starts = [e["time"] for e in events if e["type"] == "round_started"]
    finish = [e["time"] for e in events if e["type"] == "training_finished"]
    per_round = [e["data"]["seconds"] for e in events if e["type"] == "round_done"]
    return [(finish[0] - starts[0]) / len(per_round)] + per_round if starts and finish else per_round


def measure_run(
    url: str | list[str], app: Path, workspace: Path, clients: int, level: str, queue_type: str = "classic"
) -> tuple[list[float], str, float]:
    """Run `app` as run 1 with `clients` workers: round_seconds(), the run's phase, the server's peak RSS (MB)."""
    processes = start_federation(workspace, url, clients, level, queue_type)
    transport = connect(url if isinstance(url, str) else ",".join(url))
    admin = RequestClient(transport)
    try:
        wait_for_clients(admin, clients, timeout=120, on_status=lambda s: None)
        result = run_job(admin, app, run=1, on_status=lambda s: None, poll=0.2, timeout=3600)
        rss = proc_status(processes[0].pid, "VmHWM") / 1024
        times = round_seconds(transport, 1)
        shutdown_all(admin)
    finally:
        admin.close()
        transport.close()
        stop_processes(processes)
    return times, result.phase, rss


def run_case(
    urls: list[str], name: str, clients: int, rounds: int, size: int | None, keep: Path | None, queue_type: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = keep / name if keep else Path(tmp)
        level = "INFO" if keep else "WARNING"
        app = make_app(work, clients=clients, rounds=rounds, size=size)
        times, phase, rss = measure_run(urls, app, work / "ws", clients, level, queue_type)
        mean, rounds_only = times[0], times[1:]
        print("   per round (ms):", " ".join(f"{t * 1000:.0f}" for t in rounds_only))
        print(
            f"{name:>8}: {clients} clients, {rounds} rounds, {phase}: {mean * 1000:8.1f} ms/round "
            f"(rounds {min(rounds_only) * 1000:.1f}-{max(rounds_only) * 1000:.1f} ms), server peak RSS {rss:.0f} MB"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", help="AMQP base URL of a broker whose management API is on --mgmt")
    parser.add_argument("--cases", default="hello,10M-2,10M-8")
    parser.add_argument("--rounds-big", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="keep each case's workspace (INFO logs) under this folder")
    parser.add_argument("--cluster", type=int, default=0, help="start a private cluster of this many nodes")
    parser.add_argument("--queue-type", choices=["classic", "quorum"], help="default: quorum on a cluster")
    args = parser.parse_args()
    queue_type = args.queue_type or ("quorum" if args.cluster else "classic")
    nodes: list[LocalNode] = []
    cluster = None
    if args.cluster:
        cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="bench-cluster-")), args.cluster).start()
        nodes = cluster.nodes
    elif args.broker is None:
        nodes = [LocalNode(Path(tempfile.mkdtemp(prefix="bench-rabbitmq-"))).start()]
    try:
        for case in args.cases.split(","):
            if nodes:
                vhost = f"bench-{uuid.uuid4().hex[:8]}"
                nodes[0].create_vhost(vhost)
                urls = [node.amqp_url(vhost) for node in nodes]
            else:
                urls = [args.broker]
            if case == "hello":
                run_case(urls, case, 2, 10, None, args.keep, queue_type)
            else:
                clients = int(case.split("-")[1])
                run_case(urls, case, clients, args.rounds_big, 10_000_000, args.keep, queue_type)
            if nodes:
                print(f"   {node_memory(nodes)}; {queue_type} queues")
            print("   load average: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    finally:
        if cluster is not None:
            cluster.stop(fast=True)
        for node in nodes if cluster is None else []:
            node.stop()


if __name__ == "__main__":
    main()
