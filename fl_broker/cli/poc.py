"""`fl-broker poc APP --clients N`: the server and N workers as real processes on a real RabbitMQ
(a private local node unless --broker is given); drives the job like an admin would and shows progress."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.markup import escape

from fl_broker.cli.flow import JobFailed, JobResult, next_run_number, run_job, shutdown_all, wait_for_clients
from fl_broker.cli.live import LiveView, show_result
from fl_broker.errors import FlBrokerError
from fl_broker.logs import configure_logging
from fl_broker.ops.localnode import LocalNode
from fl_broker.program import add_queue_type_argument
from fl_broker.protocol.control import RequestClient
from fl_broker.transport import connect
from fl_broker.wire import names

STOP_TIMEOUT = 15.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """poc's options."""
    parser.add_argument("app", type=Path, help="app folder, e.g. apps/hello-numpy-sag")
    parser.add_argument("--clients", type=int, default=2, help="number of client sites (site-1 .. site-N)")
    parser.add_argument("--workspace", type=Path, default=Path("workspace"), help="workspace root")
    parser.add_argument(
        "--broker",
        help="AMQP URL of an existing broker, or URL1,URL2,... for a cluster's nodes (default: start a private "
        "local node)",
    )
    parser.add_argument("--run", type=int, help="run number (default: one more than the last run in WS)")
    add_queue_type_argument(parser)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds the run may take")


class Processes:
    """The server and worker processes of a poc; every one is stopped on the way out."""

    def __init__(self, root: Path, broker: str, queue_type: str = names.DEFAULT_QUEUE_TYPE) -> None:
        self.root, self.broker, self.queue_type = root, broker, queue_type
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._outputs: list[IO[bytes]] = []

    def spawn(self, name: str, *args: str) -> None:
        """Start `fl-broker ARGS` with its console output in WS/NAME/console.txt."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        output = open(folder / "console.txt", "ab")
        self._outputs.append(output)
        command = [sys.executable, "-m", "fl_broker.cli", *args, "--workspace", str(self.root), "--broker", self.broker]
        command += ["--queue-type", self.queue_type]
        self.procs[name] = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def check_alive(self) -> None:
        """JobFailed if a process died."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise JobFailed(f"{name} exited with code {proc.returncode}; see {self.root / name / 'log.txt'}")

    def stop(self, graceful: bool) -> None:
        """Wait for a clean exit (after shutdown requests), then SIGTERM, then SIGKILL."""
        deadline = time.monotonic() + (STOP_TIMEOUT if graceful else 0)
        for proc in self.procs.values():
            _wait(proc, deadline)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.procs.values():
            _wait(proc, deadline)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for output in self._outputs:
            output.close()


def _wait(proc: subprocess.Popen[bytes], deadline: float) -> None:
    try:
        proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass


def _show_result(console: Console, root: Path, result: JobResult, clients: int) -> None:
    show_result(console, root, result)
    for i in range(1, clients + 1):
        site_model = root / f"site-{i}" / f"run_{result.run}" / "model" / "best_numpy.npy"
        if site_model.is_file():
            console.print(f"site-{i} saved its last weights to [cyan]{site_model}[/cyan]", soft_wrap=True)


def _drive(client: RequestClient, args: argparse.Namespace, procs: Processes, console: Console, run: int) -> JobResult:
    with console.status(f"waiting for {args.clients} clients to register"):
        wait_for_clients(client, args.clients, timeout=60, on_status=lambda status: procs.check_alive())
    live = LiveView(console, run=run)
    live.start(client.transport)

    def on_status(status: dict[str, Any]) -> None:
        procs.check_alive()
        live.on_status(status)

    try:
        return run_job(client, args.app.resolve(), run=run, on_status=on_status, timeout=args.timeout)
    finally:
        live.close()


def main(args: argparse.Namespace) -> int:
    """Run the app end to end with real processes; leave nothing running behind."""
    console = Console()
    root = args.workspace.resolve()
    root.mkdir(parents=True, exist_ok=True)
    configure_logging(root / "poc.log", console=False)  # the console shows progress; details go to the file
    run = args.run or next_run_number(root)
    node = None
    procs: Processes | None = None
    client: RequestClient | None = None
    transport = None
    graceful = False
    try:
        url = args.broker
        if url is None:
            node = LocalNode(root / ".rabbitmq")
            with console.status("starting a private RabbitMQ node"):
                node.start()
            url = node.amqp_url()
            console.print(
                f"private RabbitMQ node up (stopped again at the end); while it runs, its management UI is at "
                f"{node.mgmt_url} (login guest / guest)",
                soft_wrap=True,
            )
        procs = Processes(root, url, args.queue_type)
        procs.spawn("server", "server")
        for i in range(1, args.clients + 1):
            procs.spawn(f"site-{i}", "worker", "--site", f"site-{i}")
        transport = connect(url)
        client = RequestClient(transport)
        result = _drive(client, args, procs, console, run)
        _show_result(console, root, result, args.clients)
        shutdown_all(client)
        graceful = True
        return 0 if result.phase == "finished" else 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping every process[/yellow]")
        return 130
    except (FlBrokerError, OSError) as exc:
        console.print(f"[red]poc failed:[/red] {escape(str(exc))}", soft_wrap=True)
        return 1
    finally:
        if client is not None:
            client.close()
        if transport is not None:
            transport.close()
        if procs is not None:
            procs.stop(graceful)
        if node is not None:
            node.stop(fast=True)  # a throwaway node: no need to wait out a graceful stop
