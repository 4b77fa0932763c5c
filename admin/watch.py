"""`watch`: a live view of the running run. A source yields `RunView`s; the view is drawn with rich Live.

Two sources share one shape (`Iterator[RunView]`), so either can feed the view: `event_updates` listens to the
fl.event stream on a private queue of the admin's transport, `poll_updates` asks check_status every 0.2 s
(the fallback when no private queue can be had).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from admin.commands import Fetcher
from admin.metrics_view import number
from fl_broker.errors import TransportError
from fl_broker.protocol.events import EventMessage, follow_run
from fl_broker.transport import Transport

POLL_INTERVAL = 0.2
CLIENT_POLL_EVERY = 5  # ask the sites for their task state every N server polls


@dataclass
class RunView:
    """What the watch screen shows."""

    run: int | None = None
    app: str | None = None
    phase: str = "idle"
    current_round: int | None = None
    num_rounds: int | None = None
    rounds_done: int = 0
    sites: dict[str, str] = field(default_factory=dict)  # site -> task state
    last_aggregation: str = "-"
    running: bool = False
    finished: bool = False
    site_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # site -> its latest result's metrics
    mean: tuple[int, dict[str, float]] | None = None  # (round, weighted mean) of the latest round with metrics

    def apply_status(self, status: dict[str, Any]) -> None:
        """Take what check_status server says."""
        self.run, self.app = status.get("run_number"), status.get("app_name")
        self.phase = str(status.get("phase") or "idle")
        self.num_rounds = status.get("num_rounds")
        if status.get("current_round") != self.current_round and self.current_round is not None:
            self.last_aggregation = time.strftime("%H:%M:%S")  # a round ended between two polls
        self.current_round = status.get("current_round")
        done = status.get("rounds_done")
        if not isinstance(done, int):  # a server that does not report it: derive it
            done = (self.num_rounds or 0) if self.phase == "finished" else (self.current_round or 0)
        self.rounds_done = done
        if self.last_aggregation == "-" and done > 0:  # watch started after some rounds: name the last one
            self.last_aggregation = f"round {done - 1} (before watch started)"
        self.running = status.get("engine_status") in ("starting", "started")
        self.finished = not self.running
        for row in status.get("registered_clients") or []:
            self.sites.setdefault(str(row.get("site")), str(row.get("status") or "-"))
        latest = status.get("metrics")
        if isinstance(latest, dict):
            self.site_metrics.update(latest.get("sites") or {})
            if latest.get("mean") and isinstance(latest.get("round"), int):
                self.mean = (latest["round"], latest["mean"])

    def apply_clients(self, clients: dict[str, Any]) -> None:
        """Take what check_status client says (per-site task state)."""
        for site, answer in clients.items():
            if not answer.get("ok"):
                self.sites[site] = str(answer.get("error") or "no reply")
                continue
            status = (answer.get("result") or {}).get("status") or {}
            task = status.get("task")
            self.sites[site] = f"{status.get('status')}: {task}" if task else str(status.get("status"))

    def apply_event(self, event: EventMessage) -> None:
        """Take one fl.event lifecycle event."""
        kind, rnd, data = event.type, event.round, event.data
        if kind == "training_started":
            self.num_rounds, self.phase = data.get("num_rounds", self.num_rounds), "training"
        elif kind == "round_started":
            self.current_round, self.phase = rnd, f"round {rnd}"
            self.sites = {site: f"training round {rnd}" for site in self.sites}
        elif kind == "after_contribution_accept" and data.get("site"):
            self.sites[str(data["site"])] = "result accepted" if data.get("accepted") else "result rejected"
            if isinstance(data.get("metrics"), dict):
                self.site_metrics[str(data["site"])] = data["metrics"]
        elif kind == "after_aggregation":
            self.last_aggregation = f"{time.strftime('%H:%M:%S')} ({data.get('seconds', 0):g} s, round {rnd})"
        elif kind == "round_done" and isinstance(rnd, int):
            self.rounds_done = rnd + 1
            if isinstance(data.get("metrics"), dict) and data["metrics"]:
                self.mean = (rnd, data["metrics"])
        elif kind in ("training_finished", "run_aborted", "run_failed"):
            self.phase = {"training_finished": "finished", "run_aborted": "aborted"}.get(kind, "failed")
            self.running, self.finished = False, True


def poll_updates(fetcher: Fetcher, interval: float = POLL_INTERVAL) -> Iterator[RunView]:
    """RunViews from check_status polls, until the run stops."""
    view = RunView()
    polls = 0
    while True:
        view.apply_status(fetcher.call("check_status", {"target": "server"}))
        if polls % CLIENT_POLL_EVERY == 0 and view.running:
            view.apply_clients(fetcher.call("check_status", {"target": "client"}).get("clients") or {})
        polls += 1
        yield view
        if view.finished:
            return
        time.sleep(interval)


def event_updates(fetcher: Fetcher, transport: Transport) -> Iterator[RunView]:
    """RunViews from the fl.event stream of the current run (one check_status first for the start state)."""
    view = RunView()
    view.apply_status(fetcher.call("check_status", {"target": "server"}))
    yield view
    if view.finished:
        return
    try:
        if view.run is None:
            raise NotImplementedError("no run number to follow")
        subscription, inbox = follow_run(transport, view.run)
    except (NotImplementedError, TransportError):  # e.g. a broker account that may not declare queues
        yield from poll_updates(fetcher)
        return
    try:
        while not view.finished:
            try:
                view.apply_event(inbox.get(timeout=1.0))
            except queue.Empty:
                view.apply_status(fetcher.call("check_status", {"target": "server"}))  # a missed end event
            yield view
    finally:
        subscription.cancel()


def updates(fetcher: Fetcher, transport: Transport | None) -> Iterator[RunView]:
    """The event stream of `transport`, or polling when there is no transport to listen on."""
    if transport is not None:
        return event_updates(fetcher, transport)
    return poll_updates(fetcher)


class WatchScreen:
    """The rich renderable of a RunView: a progress bar over rounds and the per-site task states."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]run {task.fields[run]}[/bold] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rounds"),
            TimeElapsedColumn(),
        )
        self.task = self.progress.add_task("", total=None, run="-")

    def draw(self, view: RunView) -> RenderableType:
        """Update the bar and return the whole screen."""
        self.progress.update(
            self.task, completed=view.rounds_done, total=view.num_rounds, description=view.phase, run=view.run or "-"
        )
        sites = Table(title="Sites", title_justify="left")
        sites.add_column("Site")
        sites.add_column("Task state")
        sites.add_column("Metrics (latest result)")
        for site, state in sorted(view.sites.items()):
            sites.add_row(escape(site), escape(state), escape(metrics_line(view.site_metrics.get(site))))
        mean = f"round {view.mean[0]} mean: {metrics_line(view.mean[1])}\n" if view.mean else ""
        footer = Text(f"{mean}app {view.app or '-'} | last aggregation: {view.last_aggregation} | Ctrl-C leaves")
        return Group(self.progress, sites, footer)


def metrics_line(metrics: dict[str, float] | None) -> str:
    """'loss=0.25 accuracy=0.91' (6 significant digits), '-' for none."""
    return " ".join(f"{name}={number(value)}" for name, value in metrics.items()) if metrics else "-"


def watch(console: Console, source: Iterator[RunView]) -> RunView | None:
    """Draw every update of `source` until the run stops; Ctrl-C (KeyboardInterrupt) propagates."""
    screen = WatchScreen()
    last: RunView | None = None
    with Live(console=console, auto_refresh=False, transient=False) as live:
        for view in source:
            live.update(screen.draw(view), refresh=True)
            last = view
    return last
