"""Lines and the closing table of a comparison, and the ratio of fl-broker to its best peer on a row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.compare.rows import OK, PEERS, SKIPPED, SMALLEST_MODEL_FOR_RATIO_MIB, SYSTEMS, WORKER_RSS_LIMIT, Outcome, Row

SYSTEM_TITLES = {
    "fl-broker": "fl-broker (processes, RabbitMQ)",
    "flower-sim": "Flower simulation (Ray)",
    "flower-grpc": "Flower legacy gRPC (processes)",
}


@dataclass(frozen=True)
class Ratio:
    """fl-broker's number divided by the best peer's, and which peer that was (None: nothing to compare)."""

    value: float | None
    peer: str | None

    def text(self) -> str:
        return "-" if self.value is None else f"{self.value:.2f}x ({self.peer})"


def ratio(outcomes: list[Outcome], metric: Callable[[Outcome], float | None]) -> Ratio:
    """fl-broker / the lowest value among the peers that ran the row correctly (lower is better)."""
    ours = next((o for o in outcomes if o.system == "fl-broker" and o.status == OK), None)
    peers = [(v, o.system) for o in outcomes if o.system in PEERS and o.status == OK and (v := metric(o))]
    mine = metric(ours) if ours else None
    if mine is None or not peers:
        return Ratio(None, None)
    best, peer = min(peers)
    return Ratio(mine / best, peer)


def time_ratio(outcomes: list[Outcome]) -> Ratio:
    """Seconds per round, fl-broker over the fastest peer."""
    return ratio(outcomes, lambda o: o.seconds_per_round)


def memory_ratio(outcomes: list[Outcome]) -> Ratio:
    """Peak summed PSS, fl-broker over the leanest peer."""
    return ratio(outcomes, lambda o: o.peak_pss_mib)


def outcome_line(outcome: Outcome, row_size: int = 0) -> str:
    """One system's result on a row, as printed as soon as it is known (with `row_size`, the model's float32
    count, fl-broker's line also gives its processes' peak RSS against the model)."""
    seconds = "-" if outcome.seconds_per_round is None else f"{outcome.seconds_per_round:.4f} s/round"
    memory = "-" if outcome.peak_pss_mib is None else f"{outcome.peak_pss_mib / 1024:.2f} GiB peak PSS"
    line = f"  {outcome.system:<12} {outcome.status:<14} {seconds:>16}  {memory:>18}  ({outcome.wall_seconds:.0f} s"
    line += f", {sum(outcome.peak_processes.values())} processes)"
    if outcome.server_peak_rss_mib is not None:
        line += f"\n{'':16}{rss_text(outcome, row_size)}" if row_size else ""
    return line + (f"  {outcome.detail}" if outcome.detail else "")


def rss_text(outcome: Outcome, size: int) -> str:
    """The server's and the largest worker's peak RSS, and the worker's against the scale target."""
    model_mib = size * 4 / 2**20  # float32 weights
    worker = outcome.worker_peak_rss_mib or 0.0
    measured = f"peak RSS: server {outcome.server_peak_rss_mib:.0f} MiB, largest worker {worker:.0f} MiB"
    if model_mib < SMALLEST_MODEL_FOR_RATIO_MIB:  # no verdict where the process floor (~48 MiB) dominates
        return measured
    verdict = "within" if worker <= WORKER_RSS_LIMIT * model_mib else "OVER"
    return f"{measured} = {worker / model_mib:.2f}x the {model_mib:.0f} MiB model ({verdict} {WORKER_RSS_LIMIT:g}x)"


def cell(outcome: Outcome | None) -> str:
    """A table cell: "0.0123 (0.45 GiB)", or the status of a run that did not give a number."""
    if outcome is None:
        return ""
    memory = f" ({outcome.peak_pss_mib / 1024:.2f} GiB)" if outcome.peak_pss_mib else ""
    if outcome.status != OK:
        return outcome.status + memory
    return f"{outcome.seconds_per_round:.4f}{memory}"


def table(rows: list[Row], outcomes: list[Outcome]) -> str:
    """The whole comparison as a Markdown table: seconds per round after the first, (peak summed PSS)."""
    systems = [s for s in SYSTEMS if any(o.system == s and o.status != SKIPPED for o in outcomes)]
    lines = [
        "| workload | " + " | ".join(SYSTEM_TITLES[s] for s in systems) + " | fl-broker / best peer (time) |",
        "|---" * (len(systems) + 2) + "|",
    ]
    for row in rows:
        mine = [o for o in outcomes if o.row == row.name]
        cells = [cell(next((o for o in mine if o.system == s), None)) for s in systems]
        lines.append(f"| {row.describe()} | " + " | ".join(cells) + f" | {time_ratio(mine).text()} |")
    return "\n".join(lines)
