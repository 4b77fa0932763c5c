"""The rows of the comparison (issue 10's table), and what one system's run of one row gives back."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bench.compare.model import check_final


@dataclass(frozen=True)
class Row:
    """One workload: `size` float32 weights, `clients` clients, `rounds` rounds of FedAvg.

    `timeout` bounds one system's whole run of the row (start-up included): a run that hangs or crawls is
    stopped and reported as a timeout."""

    name: str
    size: int
    clients: int
    rounds: int
    timeout: float
    systems: tuple[str, ...] | None = None  # None: every system; else the only ones that can run the row here

    def runs(self, system: str) -> bool:
        """Whether `system` is run on this row (the scale rows are fl-broker's only)."""
        return self.systems is None or system in self.systems

    def describe(self) -> str:
        """A label for the table: "3x3 x 2 clients, 10 rounds"."""
        model = "3x3" if self.size == 9 else f"{self.size / 1e6:g}M"
        return f"{model} x {self.clients} clients, {self.rounds} rounds"


# Timeouts: about 10x what the slowest system needed in issue 10's measurements, start-up included.
ROWS = [
    Row("3x3-2", 9, 2, 10, 180),
    Row("3x3-8", 9, 8, 10, 180),
    Row("1M-8", 1_000_000, 8, 10, 240),
    Row("10M-8", 10_000_000, 8, 5, 400),
    Row("50M-2", 50_000_000, 2, 3, 400),
    Row("50M-8", 50_000_000, 8, 3, 600),
]
# Scale rows (issue 10: "10M x 32 and 50M x 16 clients complete with exact weights, worker RSS <= 2.5 x
# model"): fl-broker only, and not part of the default table. Flower's gRPC processes already run out of
# memory at 50M x 8 on this machine and its simulation needed 9 GiB there, so its peers are not run.
FL_BROKER_ONLY = ("fl-broker",)
SCALE = [
    Row("10M-32", 10_000_000, 32, 3, 900, FL_BROKER_ONLY),
    Row("50M-16", 50_000_000, 16, 3, 1200, FL_BROKER_ONLY),
]
QUICK = ["3x3-2", "3x3-8"]
SYSTEMS = ["fl-broker", "flower-sim", "flower-grpc"]
SKIPPED = "skipped"
# A worker's peak RSS may be at most this many times the model's size (issue 10's scale target).
WORKER_RSS_LIMIT = 2.5
SMALLEST_MODEL_FOR_RATIO_MIB = 16  # below it the worker-RSS ratio measures the interpreter, not the data path
PEERS = ["flower-sim", "flower-grpc"]

OK = "ok"
WRONG_WEIGHTS = "wrong weights"
TIMEOUT = "timeout"
OUT_OF_MEMORY = "out of memory"
FAILED = "failed"


@dataclass
class Outcome:
    """How one system ran one row. `seconds_per_round` is over the rounds after the first; `peak_pss_mib`
    is the highest PSS summed over all the system's processes (the broker's too, for fl-broker)."""

    system: str
    row: str
    status: str
    seconds_per_round: float | None = None
    peak_pss_mib: float | None = None
    peak_processes: dict[str, int] = field(default_factory=dict)  # command name -> count, at the peak
    wall_seconds: float = 0.0
    detail: str = ""
    round_seconds: list[float] = field(default_factory=list)
    # Peak RSS (VmHWM) of the server and of the largest worker, in MiB, read when the run had ended (fl-broker).
    server_peak_rss_mib: float | None = None
    worker_peak_rss_mib: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A plain dict for the results file."""
        return asdict(self)


def seconds_per_round(started: list[float], done: list[float]) -> float:
    """From the start of the second round to the end of the last, per round: what a round costs once the
    system is warm, gaps between rounds included. Takes the wall-clock times at which each round started and
    ended, in round order."""
    if len(started) < 2 or len(done) != len(started):
        raise ValueError(f"need the start and end of at least 2 rounds, got {len(started)} and {len(done)}")
    return (done[-1] - started[1]) / (len(started) - 1)


def judge(system: str, row: Row, started: list[float], done: list[float], weights: np.ndarray) -> Outcome:
    """The Outcome of a run that ended: OK with its round times if every round was timed and the final
    weights are exactly initial + rounds, else why not."""
    if len(started) != row.rounds or len(done) != row.rounds:
        detail = f"timed {len(started)} round starts and {len(done)} ends of {row.rounds} rounds"
        return Outcome(system, row.name, FAILED, detail=detail)
    problem = check_final(np.asarray(weights), row.size, row.rounds)
    status = WRONG_WEIGHTS if problem else OK
    return Outcome(
        system,
        row.name,
        status,
        seconds_per_round=round(seconds_per_round(started, done), 5),
        detail=problem or "",
        round_seconds=round_durations(started, done),
    )


def round_durations(started: list[float], done: list[float]) -> list[float]:
    """Each round's own duration, start to end, in seconds."""
    return [round(end - start, 4) for start, end in zip(started, done, strict=True)]


def pick(names: str, known: list[str], what: str) -> list[str]:
    """A comma-separated choice checked against `known`; raises ValueError naming the unknown entry."""
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    for name in chosen:
        if name not in known:
            raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(known)}")
    if not chosen:
        raise ValueError(f"no {what} chosen; choose from {', '.join(known)}")
    return chosen
