"""fl-broker against Flower on issue 10's workloads, side by side, in one invocation.

    .venv/bin/python -m bench.compare                 # the full table (all rows, all systems)
    .venv/bin/python -m bench.compare --quick         # the 3x3 rows only
    .venv/bin/python -m bench.compare --rows 1M-8 --systems fl-broker,flower-sim
    .venv/bin/python -m bench.compare --scale         # the scale rows (10M x 32, 50M x 16), fl-broker only

Each row is a float32 model (3x3 or a vector), FedAvg, every client adds 1, the server averages; every run
of every system must end with exactly initial + rounds. Printed per row: seconds per round after the first,
peak PSS summed over all processes of the system (the RabbitMQ node included for fl-broker), and fl-broker
over the best peer. Flower (flwr[simulation], pinned in requirements-flower.txt) lives in its own
virtualenv, bench/compare/.venv-flower, made on first use; fl-broker runs from this project's .venv.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.compare import flbroker_runner, flower_runner
from bench.compare.report import memory_ratio, outcome_line, table, time_ratio
from bench.compare.rows import FAILED, QUICK, ROWS, SCALE, SKIPPED, SYSTEMS, Outcome, Row, pick
from fl_broker.ops.localnode import LocalNode, NodeError

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_JSON = Path(__file__).resolve().parent / "results.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    names = [row.name for row in ROWS + SCALE]
    parser.add_argument("--rows", help=f"comma-separated, from {','.join(names)} (default: all but the scale rows)")
    parser.add_argument("--quick", action="store_true", help=f"only the small rows ({','.join(QUICK)})")
    scale = ",".join(row.name for row in SCALE)
    parser.add_argument("--scale", action="store_true", help=f"only the scale rows ({scale}; fl-broker only)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated (default: all)")
    parser.add_argument("--rounds", type=int, help="rounds for every row (default: the row's own, >= 2)")
    parser.add_argument("--timeout", type=float, help="seconds one system may take for one row (default: per row)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"results file (default: {DEFAULT_JSON})")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples")
    parser.add_argument("--min-free-gb", type=float, default=2.0, help="stop a run when the machine has less free")
    parser.add_argument("--keep", type=Path, help="keep every run's files (logs, workspaces) under this folder")
    parser.add_argument("--flower-python", help="python (>= 3.11) to make the Flower virtualenv with")
    return parser.parse_args(argv)


def choose_rows(args: argparse.Namespace) -> list[Row]:
    """The rows asked for, with --rounds and --timeout applied; ValueError for a bad choice."""
    every = ROWS + SCALE
    if args.rows:
        names = pick(args.rows, [row.name for row in every], "row")
    else:
        names = QUICK if args.quick else [row.name for row in SCALE if args.scale] or [row.name for row in ROWS]
    if args.rounds is not None and args.rounds < 2:
        raise ValueError("--rounds must be at least 2 (the first round is not timed)")
    return [
        Row(row.name, row.size, row.clients, args.rounds or row.rounds, args.timeout or row.timeout, row.systems)
        for row in every
        if row.name in names
    ]


def run_fl_broker(row: Row, work: Path, args: argparse.Namespace) -> Outcome:
    """fl-broker on a RabbitMQ node of its own, so no row inherits a previous row's broker memory."""
    node = LocalNode(work / "rabbitmq")
    node.start()
    try:
        url = node.create_vhost("compare")
        broker = node.pids()
        return flbroker_runner.run_row(
            row, url, work, broker_pids=lambda: broker, interval=args.interval, min_free_mib=args.min_free_gb * 1024
        )
    finally:
        node.stop()


def run_one(system: str, row: Row, work: Path, args: argparse.Namespace, flower: Any) -> Outcome:
    """One system on one row; a crash of the bench's own code becomes a FAILED outcome, not the end."""
    if not row.runs(system):
        return Outcome(system, row.name, SKIPPED, detail="not run on this row (a scale row: fl-broker only)")
    work.mkdir(parents=True)
    try:
        if system == "fl-broker":
            return run_fl_broker(row, work, args)
        if system == "flower-sim":
            return flower_runner.run_simulation(row, work, flower)
        return flower_runner.run_grpc(row, work, flower)
    except (NodeError, OSError, RuntimeError, ValueError, KeyError) as exc:
        return Outcome(system, row.name, FAILED, detail=f"{type(exc).__name__}: {exc}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def machine() -> dict[str, Any]:
    """What the numbers were taken on."""
    meminfo = Path("/proc/meminfo").read_text().split()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return {
        "cpus": os.cpu_count(),
        "mem_total_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024**2, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "fl_broker_commit": commit.stdout.strip(),
        "flower_requirements": flower_runner.pinned(),
        "packages": _debian_versions("rabbitmq-server", "erlang-base"),
    }


def _debian_versions(*packages: str) -> dict[str, str]:
    query = subprocess.run(["dpkg-query", "-W", *packages], capture_output=True, text=True, check=False)
    return dict(line.split("\t", 1) for line in query.stdout.splitlines() if "\t" in line)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The admin client's reconnect notices while a server starts are not results; errors still show.
    logging.basicConfig(level=logging.ERROR, format="compare: %(name)s: %(message)s")
    try:
        rows = choose_rows(args)
        systems = pick(args.systems, SYSTEMS, "system")
        flower = None
        if any(s.startswith("flower") for s in systems):
            python = flower_runner.flower_python(args.flower_python)
            flower = flower_runner.FlowerOptions(python, interval=args.interval, min_free_mib=args.min_free_gb * 1024)
    except (ValueError, flower_runner.SetupError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    base = args.keep / time.strftime("%Y%m%d-%H%M%S") if args.keep else Path(tempfile.mkdtemp(prefix="compare-"))
    started = machine()
    outcomes: list[Outcome] = []
    for row in rows:
        print(f"{row.name}: {row.describe()} (load average {os.getloadavg()[0]:.2f})", flush=True)
        for system in systems:
            outcome = run_one(system, row, base / row.name / system, args, flower)
            outcomes.append(outcome)
            print(outcome_line(outcome, row.size), flush=True)
        mine = [o for o in outcomes if o.row == row.name]
        print(f"  fl-broker / best peer: time {time_ratio(mine).text()}, memory {memory_ratio(mine).text()}")
    if args.keep is None:
        shutil.rmtree(base, ignore_errors=True)
    print("\n" + table(rows, outcomes))
    write_json(args.json, rows, outcomes, started, argv)
    print(f"\nresults: {args.json}")
    return 0


def write_json(path: Path, rows: list[Row], outcomes: list[Outcome], started: dict, argv: list[str] | None) -> None:
    """Everything measured, with the machine and the command, for the README and for later comparison."""
    per_row = {}
    for row in rows:
        mine = [o for o in outcomes if o.row == row.name]
        per_row[row.name] = {"time": vars(time_ratio(mine)), "memory": vars(memory_ratio(mine))}
    record = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": ["python", "-m", "bench.compare", *(sys.argv[1:] if argv is None else argv)],
        "machine": started,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "rows": [vars(row) for row in rows],
        "outcomes": [o.to_json() for o in outcomes],
        "ratios": per_row,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
