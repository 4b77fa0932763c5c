"""Real `fl-broker` processes for end-to-end tests, and the admin steps that drive hello-numpy-sag."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from fl_broker.cli.flow import JobResult, run_job, shutdown_all, wait_for_clients
from fl_broker.protocol.control import RequestClient
from fl_broker.transport import Transport

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "hello-numpy-sag"
HELLO_INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)  # its persistor's first model


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


def assert_hello_run_finished(workspace: Path, sites: tuple[str, ...] = ("site-1", "site-2")) -> None:
    """hello-numpy-sag's run 1 in `workspace` ended with the exact weights (each of 10 rounds adds 1), on the
    server and on every site, and left FLARE's layout: fl_app.txt, each participant's app under run_1, and the
    uploaded app in the server's transfer/ folder."""
    run_dir = workspace / "server" / "run_1"
    final = np.load(run_dir / "models" / "server.npy")
    assert final.dtype == np.float32
    np.testing.assert_array_equal(final, HELLO_INITIAL + 10)
    assert (run_dir / "fl_app.txt").read_text().strip() == "hello-numpy-sag"
    assert (run_dir / "app_server" / "config" / "config_fed_server.json").is_file()
    for name in ("config_fed_server.json", "config_fed_client.json"):
        assert (workspace / "server" / "transfer" / "hello-numpy-sag" / "config" / name).is_file()
    for site in sites:
        site_run = workspace / site / "run_1"
        assert (site_run / f"app_{site}" / "config" / "config_fed_client.json").is_file()
        np.testing.assert_array_equal(np.load(site_run / "model" / "best_numpy.npy"), HELLO_INITIAL + 10)
