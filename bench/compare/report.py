"""Lines and the closing table of a comparison, and the ratio of fl-broker to its best peer on a row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.compare.rows import OK, PEERS, SYSTEMS, Outcome, Row

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


def outcome_line(outcome: Outcome) -> str:
    """One system's result on a row, as printed as soon as it is known."""
    seconds = "-" if outcome.seconds_per_round is None else f"{outcome.seconds_per_round:.4f} s/round"
    memory = "-" if outcome.peak_pss_mib is None else f"{outcome.peak_pss_mib / 1024:.2f} GiB peak PSS"
    line = f"  {outcome.system:<12} {outcome.status:<14} {seconds:>16}  {memory:>18}  ({outcome.wall_seconds:.0f} s"
    line += f", {sum(outcome.peak_processes.values())} processes)"
    return line + (f"  {outcome.detail}" if outcome.detail else "")


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
    systems = [s for s in SYSTEMS if any(o.system == s for o in outcomes)]
    lines = [
        "| workload | " + " | ".join(SYSTEM_TITLES[s] for s in systems) + " | fl-broker / best peer (time) |",
        "|---" * (len(systems) + 2) + "|",
    ]
    for row in rows:
        mine = [o for o in outcomes if o.row == row.name]
        cells = [cell(next((o for o in mine if o.system == s), None)) for s in systems]
        lines.append(f"| {row.describe()} | " + " | ".join(cells) + f" | {time_ratio(mine).text()} |")
    return "\n".join(lines)
