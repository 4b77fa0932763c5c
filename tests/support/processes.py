"""Real `fl-broker` processes for end-to-end tests, and the admin steps that drive hello-numpy-sag."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fl_broker.cli.flow import JobResult, run_job, shutdown_all, wait_for_clients
from fl_broker.protocol.control import RequestClient
from fl_broker.transport import Transport

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "hello-numpy-sag"


def spawn(
    workspace: Path, *args: str, broker: str | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`fl-broker ARGS --workspace WS [--broker URL]`; `env` replaces every FL_* variable (as systemd's
    EnvironmentFile would set them). Standard error is a pipe kept for failure messages, so this suits short
    runs; long ones should not leave it unread (see tests/support/federation.py)."""
    command = [sys.executable, "-m", "fl_broker.cli", *args, "--workspace", str(workspace)]
    if broker is not None:
        command += ["--broker", broker]
    full_env = None
    if env is not None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("FL_")}
        full_env.update(env)
    return subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run_hello_job(transport: Transport, clients: int = 2) -> JobResult:
    """As an admin on `transport` (closed afterwards): wait for the clients, run hello-numpy-sag as run 1,
    then shut the clients and the server down."""
    admin = RequestClient(transport)
    try:
        wait_for_clients(admin, clients, timeout=60, on_status=lambda s: None)
        result = run_job(admin, APP, run=1, on_status=lambda s: None, timeout=120)
        shutdown_all(admin)
        return result
    finally:
        admin.close()
        transport.close()


def assert_exited_cleanly(processes: list[subprocess.Popen[bytes]]) -> None:
    """Every process exits with 0 within 30 s; otherwise show the end of its standard error."""
    for proc in processes:
        assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
