"""A federation of real processes (server + workers) on a RabbitMQ vhost, for tests that kill things."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fl_broker.apps.archive import pack_app
from fl_broker.errors import FlBrokerError
from fl_broker.protocol.control import RequestClient
from fl_broker.transport import connect
from fl_broker.wire import names

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "hello-numpy-sag"
KILL_HOOK = Path(__file__).resolve().parent / "kill_hook"
SITES = ("site-1", "site-2")


def run_poc(app: Path, workspace: Path, broker_url: str, clients: int = 2) -> subprocess.CompletedProcess[str]:
    """`fl-broker poc APP` as a user runs it (server and workers as processes on the broker); it must exit 0."""
    command = [sys.executable, "-m", "fl_broker.cli", "poc", str(app), "--clients", str(clients)]
    command += ["--workspace", str(workspace), "--broker", broker_url]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def make_app(
    folder: Path,
    *,
    server_args: dict[str, Any] | None = None,
    client_args: dict[str, Any] | None = None,
    persistor_args: dict[str, Any] | None = None,
) -> Path:
    """A copy of hello-numpy-sag with workflow, trainer and persistor arguments changed (persistor
    `size=N`: a vector of N float32 weights instead of the 3x3 model), with an empty custom/ folder for the
    test's own files (hello-numpy-sag itself names built-ins only)."""
    app = folder / "app"
    shutil.copytree(APP, app)
    (app / "custom").mkdir(exist_ok=True)
    for name, section, changes in (
        ("config_fed_server.json", lambda c: c["workflows"][0]["args"], server_args),
        ("config_fed_server.json", lambda c: c["components"][0]["args"], persistor_args),
        ("config_fed_client.json", lambda c: c["executors"][0]["executor"]["args"], client_args),
    ):
        path = app / "config" / name
        config = json.loads(path.read_text())
        section(config).update(changes or {})
        path.write_text(json.dumps(config))
    return app


REFUSING_EXECUTOR = """
from fl_broker.fl.executor import Executor
from fl_broker.wire.messages import ReturnCode, make_reply


class Refuser(Executor):
    def execute(self, task_name, shareable, context, abort_signal):
        return make_reply(ReturnCode.BAD_TASK_DATA)
"""


def refusing_app(folder: Path, num_rounds: int = 2) -> Path:
    """hello-numpy-sag whose clients answer every task with BAD_TASK_DATA: no round can accept anything."""
    app = make_app(folder, server_args={"num_rounds": num_rounds})
    (app / "custom").mkdir(exist_ok=True)
    (app / "custom" / "refuser.py").write_text(REFUSING_EXECUTOR)
    set_executor(app, "refuser.Refuser")
    return app


def broken_app(folder: Path) -> Path:
    """hello-numpy-sag whose persistor's module (in its custom/) raises when imported: the server app cannot
    start."""
    app = folder / "broken"
    shutil.copytree(APP, app)
    (app / "custom").mkdir()
    (app / "custom" / "np_model_persistor.py").write_text("raise RuntimeError('broken on purpose')\n")
    config = app / "config" / "config_fed_server.json"
    config.write_text(config.read_text().replace("fl_broker.fl.numpy_components.", "np_model_persistor."))
    return app


def set_workflow(app: Path, path: str, args: dict[str, Any], workflow_id: str = "cyclic") -> None:
    """Make `app`'s only workflow the class at `path` with `args` (under id `workflow_id`)."""
    config_file = app / "config" / "config_fed_server.json"
    config = json.loads(config_file.read_text())
    config["workflows"] = [{"id": workflow_id, "path": path, "args": args}]
    config_file.write_text(json.dumps(config))


def set_executor(app: Path, path: str, args: dict[str, Any] | None = None) -> None:
    """Make the executor of `app`'s `train` task the class at `path` (e.g. a file put in its custom/)."""
    config_file = app / "config" / "config_fed_client.json"
    config = json.loads(config_file.read_text())
    config["executors"][0]["executor"] = {"path": path, "args": args or {}}
    config_file.write_text(json.dumps(config))


class ProcessFederation:
    """Server and workers as `fl-broker` processes; an admin client in this process."""

    def __init__(
        self, workspace: Path, url: str, *, client_grace: float = 5.0, program_args: tuple[str, ...] = ()
    ) -> None:
        self.workspace, self.url, self.client_grace = workspace, url, client_grace
        self.program_args = program_args  # given to the server and every worker, e.g. ("--chunk-size", "64K")
        self.broker_for: dict[str, str] = {}  # process name -> its --broker, where not `url` (cluster tests)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.transport = connect(url)
        self.admin = RequestClient(self.transport)

    def _spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        command = [
            sys.executable,
            "-m",
            "fl_broker.cli",
            *args,
            "--workspace",
            str(self.workspace),
            "--broker",
            self.broker_for.get(name, self.url),
            *self.program_args,
        ]
        self.procs[name] = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env} if env else None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start_server(self, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self._spawn("server", "server", "--client-grace", str(self.client_grace), *args, env=env)

    def start_server_killed_before(self, spec: str) -> None:
        """A server that ends itself (os._exit) at the rename `spec` names (tests/support/kill_hook)."""
        path = os.pathsep.join([str(KILL_HOOK), os.environ.get("PYTHONPATH", "")])
        self.start_server(env={"PYTHONPATH": path, "FL_TEST_KILL_BEFORE": spec})

    def wait_exit(self, name: str, timeout: float = 120) -> int:
        """Wait for process `name` to end; its exit code."""
        return self.procs[name].wait(timeout)

    def start_worker(self, site: str) -> None:
        self._spawn(site, "worker", "--site", site, "--heartbeat-interval", "0.5")

    def start_workers(self, sites: Sequence[str] = SITES) -> None:
        """A worker per site, started together; returns once every one is registered and alive."""
        for site in sites:
            self.start_worker(site)
        self.wait_clients(len(sites))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait(30)

    def call(self, command: str, timeout: float = 30, **args: Any) -> Any:
        return self.admin.call(names.SERVER, command, args, timeout=timeout)

    def status(self) -> dict[str, Any]:
        return self.call("check_status", target="server", timeout=10)

    def wait_for(self, predicate, timeout: float = 120, what: str = "condition") -> dict[str, Any]:
        """Poll check_status until `predicate(status)`; tolerate a server that is restarting."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.status()
                if predicate(last):
                    return last
            except FlBrokerError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last status {last}")

    def wait_clients(self, count: int) -> None:
        self.wait_for(lambda s: sum(c["alive"] for c in s["registered_clients"]) >= count, what=f"{count} clients")

    def start_job(self, app: Path, run: int = 1) -> None:
        self.call("upload_app", app=app.name, archive=pack_app(app))
        self.call("set_run_number", run=run)
        self.call("deploy_app", app=app.name, target="all")
        self.call("start_app", target="all")

    def wait_finished(self, timeout: float = 180) -> dict[str, Any]:
        return self.wait_for(
            lambda s: s["engine_status"] == "stopped" and s["phase"] in ("finished", "aborted", "failed"),
            timeout,
            "the run to end",
        )

    def log(self, name: str) -> str:
        path = self.workspace / name / "log.txt"
        return path.read_text() if path.exists() else ""

    def accepted_per_round(self) -> dict[int, list[str]]:
        """round -> sites whose result the server accepted (from its log)."""
        accepted: dict[int, list[str]] = {}
        for match in re.finditer(r"round (\d+): accepted result from (\S+) ", self.log("server")):
            accepted.setdefault(int(match.group(1)), []).append(match.group(2))
        return accepted

    def close(self) -> None:
        for target in ("client", "server"):
            try:
                self.call("shutdown", target=target, timeout=10)
            except FlBrokerError:
                pass
        self.admin.close()
        self.transport.close()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def running_federation(workspace: Path, url: str, **options: Any) -> Iterator[ProcessFederation]:
    """The server and a worker per site of SITES as processes, every worker registered; shut down after."""
    fed = ProcessFederation(workspace, url, **options)
    try:
        fed.start_server()
        fed.start_workers()
        yield fed
    finally:
        fed.close()
