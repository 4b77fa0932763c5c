"""An in-process federation (server engine + workers on a named MemoryBroker) and a way to run the admin
console against it, as `fl-broker admin --broker memory://NAME` would."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from admin import main as admin_main
from fl_broker import names
from fl_broker.engine import EngineOptions, ServerEngine
from fl_broker.rpc import RequestClient
from fl_broker.transport.memory import MemoryBroker
from fl_broker.workspace import Workspace
from workers.worker import ClientWorker, worker_workspace

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "hello-numpy-sag"


class Federation:
    """A server and workers on one named in-process broker; the admin reaches it as memory://NAME."""

    def __init__(self, root: Path, sites: list[str]) -> None:
        self.root = root
        self.name = f"admin-test-{uuid.uuid4().hex}"
        self.url = f"memory://{self.name}"
        self.broker = MemoryBroker.named(self.name)
        self.engine = ServerEngine(
            workspace=Workspace(root, "server"),
            transport=self.broker.connect(user="server"),
            options=EngineOptions(client_grace=1.0, site_timeout=1.0),
        )
        self.engine.start()
        self.workers = {s: self._worker(s) for s in sites}
        self.probe = RequestClient(self.broker.connect(user="probe"))

    def _worker(self, site: str) -> ClientWorker:
        worker = ClientWorker(
            site=site,
            workspace=worker_workspace(self.root, site),
            transport=self.broker.connect(user=site),
            heartbeat_interval=0.1,
        )
        worker.start()
        return worker

    def status(self) -> dict[str, Any]:
        return self.probe.call(names.SERVER, "check_status", {"target": "server"}, timeout=5)

    def wait_registered(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while len(self.engine.clients.alive()) < count:
            assert time.monotonic() < deadline, "clients did not register"
            time.sleep(0.05)

    def wait_stopped(self, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (status := self.status())["engine_status"] != "stopped":
            assert time.monotonic() < deadline, f"run did not stop: {status}"
            time.sleep(0.05)
        return status

    def stage_app(self) -> None:
        """Copy hello-numpy-sag into the admin's transfer dir, as a user would."""
        shutil.copytree(APP, self.root / "admin" / "transfer" / "hello-numpy-sag", dirs_exist_ok=True)

    def close(self) -> None:
        self.probe.close()
        for worker in self.workers.values():
            worker.close()
        self.engine.close()


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    federation = Federation(tmp_path, ["site-1", "site-2"])
    federation.wait_registered(2)
    yield federation
    federation.close()


@dataclass
class Run:
    """What one `fl-broker admin` run printed and returned."""

    code: int
    text: str

    def objects(self) -> list[dict[str, Any]]:
        """The JSON lines (in --json mode)."""
        return [json.loads(line) for line in self.text.splitlines() if line.startswith("{")]


def run_admin(url: str, root: Path, commands: str, *, json_mode: bool = False, timeout: float = 3.0) -> Run:
    """`fl-broker admin --workspace ROOT --broker URL -c COMMANDS [--json]`, output captured."""
    args = argparse.Namespace(
        workspace=root, broker=url, timeout=timeout, commands=commands, script=None, json=json_mode
    )
    buffer = io.StringIO()
    code = admin_main.main(args, out=Console(file=buffer, width=200, highlight=False))
    return Run(code, buffer.getvalue())
