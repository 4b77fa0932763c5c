"""What `simulate` and `poc` show: a live view of the run (round, seconds per round, accepted results, from
the run's fl.event stream), then the result. The live view appears only once a run has lasted a second, so
a quick run prints just its result; in a terminal it is one line redrawn in place, in a pipe or a log one
line per finished round (at most one a second)."""

from __future__ import annotations

import json
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from fl_broker.cli.flow import JobResult
from fl_broker.errors import TransportError
from fl_broker.protocol.events import EventMessage, follow_run
from fl_broker.transport import Subscription, Transport

SHOW_AFTER = 1.0  # seconds: runs shorter than this get no live view
PIPE_LINE_EVERY = 1.0  # seconds between two progress lines in a pipe (a fast run does not flood a log)


@dataclass
class RoundStats:
    """What the live view knows of a run, taken from its lifecycle events (and check_status replies)."""

    run: int
    num_rounds: int | None = None
    round: int | None = None
    rounds_done: int = 0
    targets: int = 0  # sites asked in the current round
    accepted: int = 0  # results accepted in the current round
    rejected: int = 0
    accepted_total: int = 0
    phase: str = "starting"
    durations: list[float] = field(default_factory=list)  # seconds of each finished round
    last_done: tuple[int, int, int] | None = None  # the last finished round: (round, accepted, targets)
    mean: dict[str, float] = field(default_factory=dict)  # the weighted mean of the last finished round's metrics
    _round_started: float | None = None

    def apply_event(self, event: EventMessage, received: float) -> None:
        """Take one fl.event event; its `time` (the server's clock) times the rounds, else `received`."""
        kind, rnd, data = event.type, event.round, event.data
        at = event.time or received
        if kind == "training_started":
            self.num_rounds, self.phase = data.get("num_rounds", self.num_rounds), "training"
        elif kind == "round_started":
            self.round, self.phase, self._round_started = rnd, "training", at
            self.targets, self.accepted, self.rejected = len(data.get("targets") or ()), 0, 0
            self.num_rounds = data.get("num_rounds", self.num_rounds)
        elif kind == "after_contribution_accept":
            if data.get("accepted"):
                self.accepted, self.accepted_total = self.accepted + 1, self.accepted_total + 1
            else:
                self.rejected += 1
        elif kind == "round_done" and isinstance(rnd, int):
            self.rounds_done = max(self.rounds_done, rnd + 1)
            self.last_done = (rnd, self.accepted, self.targets)
            self.mean = dict(data.get("metrics") or {}) if isinstance(data.get("metrics"), dict) else {}
            if self._round_started is not None:
                self.durations.append(max(0.0, at - self._round_started))
                self._round_started = None
        elif kind in ("training_finished", "run_aborted", "run_failed"):
            self.phase = {"training_finished": "finished", "run_aborted": "aborted"}.get(kind, "failed")

    def apply_status(self, status: dict[str, Any]) -> None:
        """Take a check_status reply: the phase, and the rounds in case an event was missed."""
        self.phase = str(status.get("phase") or self.phase)
        self.num_rounds = status.get("num_rounds") or self.num_rounds
        if isinstance(status.get("rounds_done"), int):
            self.rounds_done = max(self.rounds_done, status["rounds_done"])

    @property
    def seconds_per_round(self) -> float | None:
        """Mean duration of the last (up to 10) finished rounds."""
        recent = self.durations[-10:]
        return sum(recent) / len(recent) if recent else None

    def line(self, *, finished_round: bool = False) -> str:
        """One line about the current round, e.g. `run 1 | round 4 (4/10 done) | 0.52 s/round | 1/2 results
        accepted (9 in all)`; with `finished_round`, about the last finished one (`round 3 done ...`). The
        last finished round's weighted mean of the sites' metrics follows, if they sent any (`| mean loss=0.2`)."""
        total = self.num_rounds if self.num_rounds is not None else "?"
        accepted, targets = self.accepted, self.targets
        if finished_round and self.last_done is not None:
            rnd, accepted, targets = self.last_done
            where = f"round {rnd} done ({self.rounds_done}/{total})"
        else:
            ended = self.phase in ("finished", "aborted", "failed") or self.round is None
            where = f"{self.phase if ended else f'round {self.round}'} ({self.rounds_done}/{total} done)"
        pace = f"{self.seconds_per_round:.2f} s/round" if self.seconds_per_round is not None else "- s/round"
        results = f"{accepted}/{targets} results accepted" if targets else "no results yet"
        rejected = f", {self.rejected} rejected" if self.rejected and not finished_round else ""
        means = " ".join(f"{name}={value:.4g}" for name, value in self.mean.items())
        shown = f" | mean {means}" if means else ""
        return f"run {self.run} | {where} | {pace} | {results}{rejected} ({self.accepted_total} in all){shown}"


class LiveView:
    """Follows run `run`'s events on a transport and shows them on `console` while the job runs."""

    def __init__(self, console: Console, *, run: int, show_after: float = SHOW_AFTER) -> None:
        self.console = console
        self.stats = RoundStats(run)
        self.show_after = show_after
        self._events: queue.SimpleQueue[EventMessage] = queue.SimpleQueue()
        self._subscription: Subscription | None = None
        self._started = time.monotonic()
        self._live: Live | None = None
        self._printed_rounds = 0
        self._printed_at = 0.0

    def start(self, transport: Transport) -> None:
        """Listen to the run's events (before it starts, so none is missed); without them (e.g. a login
        that may not declare a queue) the view lives on check_status replies alone."""
        self._started = time.monotonic()
        try:
            self._subscription, self._events = follow_run(transport, self.stats.run)
        except (NotImplementedError, TransportError):
            self._subscription = None

    def on_status(self, status: dict[str, Any]) -> None:
        """Called with every check_status reply of the job: take the new events and redraw."""
        while not self._events.empty():
            self.stats.apply_event(self._events.get(), time.time())
        self.stats.apply_status(status)
        if time.monotonic() - self._started < self.show_after:
            return
        if self.console.is_terminal:
            self._redraw()
        else:
            self._print_round_lines()

    def close(self) -> None:
        """Stop listening; leave the last state on the screen (if the view was shown at all)."""
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        if self._live is not None:
            self._live.stop()
            self._live = None
        elif not self.console.is_terminal and self._printed_rounds and self.stats.rounds_done > self._printed_rounds:
            self._print(self.stats.line(finished_round=True))

    def _redraw(self) -> None:
        text = Text(self.stats.line(), no_wrap=True, overflow="ellipsis")
        if self._live is None:
            self._live = Live(text, console=self.console, auto_refresh=False, transient=False)
            self._live.start()
        self._live.update(text, refresh=True)

    def _print_round_lines(self) -> None:
        now = time.monotonic()
        if self.stats.rounds_done > self._printed_rounds and now - self._printed_at >= PIPE_LINE_EVERY:
            self._print(self.stats.line(finished_round=True))
            self._printed_rounds, self._printed_at = self.stats.rounds_done, now

    def _print(self, line: str) -> None:
        self.console.print(line, soft_wrap=True, markup=False, highlight=False)


def show_result(console: Console, root: Path, result: JobResult) -> None:
    """How the run ended and the final global model; long paths stay on one line, even in a pipe."""
    failure = result.status.get("failure")
    why = f": {escape(str(failure))}" if failure and result.phase == "failed" else ""
    console.print(f"[bold]run {result.run}[/bold]: {result.phase} in {result.seconds:.2f} s{why}", soft_wrap=True)
    model_file = root / "server" / f"run_{result.run}" / "models" / "server.npy"
    if model_file.is_file():
        console.print(f"final global model ([cyan]{model_file}[/cyan]):", soft_wrap=True)
        console.print(str(np.load(model_file)), markup=False, highlight=False)
    cross_val = root / "server" / f"run_{result.run}" / "cross_site_val" / "cross_val_results.json"
    if cross_val.is_file():
        console.print(f"cross-site evaluation: [cyan]{cross_val}[/cyan]", soft_wrap=True)
    tested = global_test_line(root / "server" / f"run_{result.run}" / GLOBAL_TEST_FILE)
    if tested:
        console.print(tested, soft_wrap=True, markup=False, highlight=False)


GLOBAL_TEST_FILE = "global_test.json"  # written by an app that tests its final global model (hello-pt)


def global_test_line(path: Path) -> str | None:
    """`global model test: accuracy A, loss L on N held-out samples (PATH)` from a run's global_test.json,
    or None if there is none (or it is not such a file)."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        accuracy, loss, samples = (float(report[key]) for key in ("accuracy", "loss", "samples"))
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return f"global model test: accuracy {accuracy:.4f}, loss {loss:.4f} on {samples:.0f} held-out samples ({path})"
