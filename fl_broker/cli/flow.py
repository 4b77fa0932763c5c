"""The admin steps of a whole job (upload, set run number, deploy, start, wait, shut down), shared by
`simulate` and `poc`. Talks to the server only through control requests."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fl_broker.apps.archive import pack_app
from fl_broker.errors import FlBrokerError, JobFailed, RemoteError, RequestTimeout
from fl_broker.protocol.control import RequestClient
from fl_broker.wire import names

StatusCallback = Callable[[dict[str, Any]], None]


@dataclass
class JobResult:
    """How a job ended."""

    run: int
    phase: str
    seconds: float
    status: dict[str, Any]


def _call(client: RequestClient, command: str, timeout: float, **args: Any) -> Any:
    try:
        return client.call(names.SERVER, command, args, timeout=timeout)
    except (RemoteError, RequestTimeout) as exc:
        raise JobFailed(f"{command} failed: {exc}") from exc


def _check_sites(step: str, reply: dict[str, Any]) -> None:
    failed = {site: a.get("error") for site, a in (reply.get("clients") or {}).items() if not a.get("ok")}
    if failed:
        raise JobFailed(f"{step} failed on {failed}")


def wait_for_clients(client: RequestClient, count: int, timeout: float, on_status: StatusCallback) -> None:
    """Wait until `count` clients are registered and alive."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = _status_once_listening(client)
        except FlBrokerError:  # the server is not up yet (no reply, or its exchanges not declared yet)
            status = None
        if status is not None:
            on_status(status)
            if sum(1 for c in status["registered_clients"] if c["alive"]) >= count:
                return
        if time.monotonic() > deadline:
            raise JobFailed(f"fewer than {count} clients registered within {timeout:g} s")
        time.sleep(0.2)


def _status_once_listening(client: RequestClient) -> dict[str, Any] | None:
    """check_status, but only once the server consumes its control queue: asking earlier would publish to
    an exchange it has not declared yet, which the broker answers by closing the channel."""
    if client.transport.consumer_count(names.SERVER_CONTROL_QUEUE) == 0:
        return None
    return dict(client.call(names.SERVER, "check_status", {"target": "server"}, timeout=5))


def run_job(
    client: RequestClient,
    app_dir: Path,
    *,
    run: int,
    on_status: StatusCallback,
    timeout: float = 3600,
    poll: float = 0.1,
) -> JobResult:
    """upload_app, set_run_number, deploy_app all, start_app all, then poll check_status until the run ends."""
    app = app_dir.name
    _call(client, "upload_app", 30, app=app, archive=pack_app(app_dir))
    _check_sites("set_run_number", _call(client, "set_run_number", 30, run=run))
    _check_sites("deploy_app", _call(client, "deploy_app", 60, app=app, target="all"))
    started = time.monotonic()
    _check_sites("start_app", _call(client, "start_app", 60, target="all"))
    while True:
        status = _call(client, "check_status", 10, target="server")
        on_status(status)
        if status["engine_status"] == "stopped":
            return JobResult(run, status["phase"], time.monotonic() - started, status)
        if time.monotonic() - started > timeout:
            raise JobFailed(f"the run did not finish within {timeout:g} s")
        time.sleep(poll)


def shutdown_all(client: RequestClient) -> None:
    """Shut down the clients, then the server (best effort: used on the way out)."""
    for target in ("client", "server"):
        try:
            client.call(names.SERVER, "shutdown", {"target": target}, timeout=15)
        except FlBrokerError:
            pass


def next_run_number(workspace_root: Path) -> int:
    """One more than the highest run folder of the server, so a reused workspace never resumes an old run."""
    server = workspace_root / "server"
    runs = [int(p.name[4:]) for p in server.glob("run_*") if p.name[4:].isdigit()] if server.is_dir() else []
    return max(runs, default=0) + 1
