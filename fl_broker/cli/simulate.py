"""`fl-broker simulate APP --clients N --workspace WS`: the server and N clients in one process, on the
in-process transport; no broker needed."""

from __future__ import annotations

import argparse
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fl_broker.apps.workspace import SERVER_DIR, Workspace
from fl_broker.cli.flow import JobResult, next_run_number, run_job, shutdown_all, wait_for_clients
from fl_broker.logs import configure_logging
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
    parser.add_argument("--log-level", default="WARNING")


def simulate(
    app_dir: Path,
    *,
    clients: int,
    workspace_root: Path,
    make_worker: WorkerFactory,
    run: int | None = None,
    on_status: Callable[[dict[str, Any]], None] = lambda status: None,
) -> JobResult:
    """Run the app end to end in this process and return how it ended."""
    broker = MemoryBroker.named(f"simulate-{uuid.uuid4().hex[:8]}")
    run = run or next_run_number(workspace_root)
    server_transport = broker.connect(user="server")
    engine = ServerEngine(
        workspace=Workspace(workspace_root, SERVER_DIR), transport=server_transport, options=EngineOptions()
    )
    engine.start()
    workers = [
        make_worker(f"site-{i}", workspace_root, broker.connect(user=f"site-{i}")) for i in range(1, clients + 1)
    ]
    for worker in workers:
        worker.start()
    admin_transport = broker.connect(user="admin")
    admin = RequestClient(admin_transport)
    try:
        wait_for_clients(admin, clients, timeout=30, on_status=on_status)
        return run_job(admin, app_dir, run=run, on_status=on_status, poll=0.05)
    finally:
        shutdown_all(admin)
        admin.close()
        for worker in workers:
            worker.close()
        engine.close()
        for transport in (admin_transport, server_transport):
            transport.close()


def main(args: argparse.Namespace, make_worker: WorkerFactory) -> int:
    """Run simulate from parsed arguments; print where the results are."""
    configure_logging(None, level=args.log_level)
    app_dir, root = args.app.resolve(), args.workspace.resolve()
    result = simulate(app_dir, clients=args.clients, workspace_root=root, make_worker=make_worker, run=args.run)
    model_file = root / "server" / f"run_{result.run}" / "models" / "server.npy"
    print(f"run {result.run}: {result.phase} in {result.seconds:.2f} s")
    if model_file.is_file():
        print(f"final global model ({model_file}):\n{np.load(model_file)}")
    return 0 if result.phase == "finished" else 1
