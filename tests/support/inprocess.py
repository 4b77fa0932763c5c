"""An in-process federation: a server engine and workers on one named MemoryBroker, plus an admin client.
The admin console reaches it as memory://NAME."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from fl_broker.apps.workspace import Workspace
from fl_broker.protocol.control import RequestClient
from fl_broker.server.engine import EngineOptions, ServerEngine
from fl_broker.transport import Transport
from fl_broker.transport.memory import MemoryBroker
from fl_broker.wire import names
from workers.worker import ClientWorker, worker_workspace

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "hello-numpy-sag"


class InProcessFederation:
    """Server, workers and an admin request client on one in-process broker."""

    def __init__(self, root: Path, sites: list[str], *, client_grace: float = 1.0, site_timeout: float = 2.0) -> None:
        self.root = root
        self.name = f"test-{uuid.uuid4().hex}"
        self.url = f"memory://{self.name}"
        self.broker = MemoryBroker.named(self.name)
        self._transports: list[Transport] = []
        self.engine = ServerEngine(
            workspace=Workspace(root, "server"),
            transport=self.connect("server"),
            options=EngineOptions(client_grace=client_grace, site_timeout=site_timeout),
        )
        self.engine.start()
        self.workers = {site: self.add_worker(site) for site in sites}
        self.admin = RequestClient(self.connect("admin"))

    def connect(self, user: str) -> Transport:
        """A new connection to this federation's broker, closed with it."""
        transport = self.broker.connect(user=user)
        self._transports.append(transport)
        return transport

    def add_worker(self, site: str) -> ClientWorker:
        worker = ClientWorker(
            site=site, workspace=worker_workspace(self.root, site), transport=self.connect(site), heartbeat_interval=0.1
        )
        worker.start()
        return worker

    def call(self, command: str, **args: Any) -> Any:
        return self.admin.call(names.SERVER, command, args, timeout=10)

    def status(self) -> dict[str, Any]:
        return self.call("check_status", target="server")

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
        self.admin.close()
        for worker in self.workers.values():
            worker.close()
        self.engine.close()
        for transport in self._transports:
            transport.close()
