"""`fl-broker simulate APP --clients N --workspace WS`: the server and N clients in one process, on the
in-process transport; no broker needed. Each participant still gets its own WS/NAME/log.txt."""

from __future__ import annotations

import argparse
import logging
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape

from fl_broker.apps.workspace import SERVER_DIR, Workspace
from fl_broker.cli.flow import JobResult, next_run_number, run_job, shutdown_all, wait_for_clients
from fl_broker.cli.live import LiveView, show_result
from fl_broker.errors import FlBrokerError
from fl_broker.logs import FORMAT
from fl_broker.protocol.control import RequestClient
from fl_broker.server.engine import EngineOptions, ServerEngine
from fl_broker.transport import Transport
from fl_broker.transport.memory import MemoryBroker

log = logging.getLogger(__name__)


class Worker(Protocol):
    """What simulate needs of a client worker."""

    def start(self) -> None: ...
    def close(self) -> None: ...


WorkerFactory = Callable[[str, Path, Transport], Worker]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """simulate's options."""
    parser.add_argument("app", type=Path, help="app folder, e.g. apps/hello-numpy-sag")
    parser.add_argument("--clients", type=int, default=2, help="number of client sites (site-1 .. site-N)")
    parser.add_argument("--workspace", type=Path, default=Path("workspace"), help="workspace root")
    parser.add_argument("--run", type=int, help="run number (default: one more than the last run in WS)")
    parser.add_argument("--log-level", default="WARNING", help="level of what the console shows")


def simulate(
    app_dir: Path,
    *,
    clients: int,
    workspace_root: Path,
    make_worker: WorkerFactory,
    run: int | None = None,
    on_status: Callable[[dict[str, Any]], None] = lambda status: None,
    live: LiveView | None = None,
) -> JobResult:
    """Run the app end to end in this process and return how it ended."""
    broker = MemoryBroker.named(f"simulate-{uuid.uuid4().hex[:8]}")
    run = run or next_run_number(workspace_root)
    server_transport = broker.connect(user="server")
    engine = ServerEngine(
        workspace=Workspace(workspace_root, SERVER_DIR), transport=server_transport, options=EngineOptions()
    )
    engine.start()
    workers = [make_worker(site, workspace_root, broker.connect(user=site)) for site in site_names(clients)]
    for worker in workers:
        worker.start()
    admin_transport = broker.connect(user="admin")
    admin = RequestClient(admin_transport)

    def each_status(status: dict[str, Any]) -> None:
        on_status(status)
        if live is not None:
            live.on_status(status)

    try:
        wait_for_clients(admin, clients, timeout=30, on_status=on_status)
        if live is not None:
            live.start(admin_transport)
        return run_job(admin, app_dir, run=run, on_status=each_status, poll=0.05)
    finally:
        if live is not None:
            live.close()
        shutdown_all(admin)
        admin.close()
        for worker in workers:
            worker.close()
        engine.close()
        for transport in (admin_transport, server_transport):
            transport.close()


def site_names(clients: int) -> list[str]:
    """site-1 .. site-N."""
    return [f"site-{i}" for i in range(1, clients + 1)]


def log_per_participant(root: Path, sites: list[str], console_level: str) -> None:
    """One log.txt per participant, as the processes of `poc` write them, though all run in this process:
    a record goes to the log of the site whose thread made it (its transport's consumers, its heartbeat),
    every other one to the server's. The console shows `console_level` and above."""
    console = logging.StreamHandler()
    console.setLevel(console_level.upper())
    handlers: list[logging.Handler] = [console]
    for who in [SERVER_DIR, *sites]:
        folder = root / who
        folder.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(folder / "log.txt", encoding="utf-8")
        handler.setLevel(logging.INFO)
        handler.addFilter(_Participant(who, frozenset(sites)))
        handlers.append(handler)
    level = min(logging.INFO, console.level)
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)
    logging.getLogger("pika").setLevel(logging.ERROR)


# Threads that belong to a site: a memory-transport consumer names its connection's login after '@', and a
# worker's heartbeat thread is `heartbeat-SITE`.
_THREAD_OWNER = re.compile(r"@(?P<user>[^@\s]+)$|^heartbeat-(?P<site>\S+)$")


class _Participant(logging.Filter):
    """Passes the records of one participant's threads."""

    def __init__(self, who: str, sites: frozenset[str]) -> None:
        super().__init__()
        self.who, self.sites = who, sites

    def filter(self, record: logging.LogRecord) -> bool:
        match = _THREAD_OWNER.search(record.threadName or "")
        owner = (match["user"] or match["site"]) if match else None
        return (owner if owner in self.sites else SERVER_DIR) == self.who


def main(args: argparse.Namespace, make_worker: WorkerFactory) -> int:
    """Run simulate from parsed arguments; show the run live, then where the results are."""
    console = Console(highlight=False)
    app_dir, root = args.app.resolve(), args.workspace.resolve()
    log_per_participant(root, site_names(args.clients), args.log_level)
    run = args.run or next_run_number(root)
    live = LiveView(console, run=run)
    try:
        result = simulate(
            app_dir, clients=args.clients, workspace_root=root, make_worker=make_worker, run=run, live=live
        )
    except (FlBrokerError, OSError) as exc:
        console.print(f"[red]simulate failed:[/red] {escape(str(exc))}", soft_wrap=True)
        return 1
    show_result(console, root, result)
    return 0 if result.phase == "finished" else 1
