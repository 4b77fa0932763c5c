"""Apps and runs: stage an uploaded app, choose and delete run numbers, deploy an app to a run."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from fl_broker.apps.archive import check_app_name, pack_app, unpack_app
from fl_broker.apps.workspace import Workspace
from fl_broker.protocol.control import BadRequest, Request
from fl_broker.server.fanout import SiteFanout
from fl_broker.server.sessions import ClientRegistry
from fl_broker.server.state import EngineState, EngineStatus

log = logging.getLogger(__name__)

APP_MARKER = "fl_app.txt"  # in run_N: which app the run uses


class AppCommands:
    """upload_app, list_apps, set_run_number, delete_run_number, deploy_app."""

    def __init__(self, *, workspace: Workspace, state: EngineState, clients: ClientRegistry, sites: SiteFanout) -> None:
        self.workspace = workspace
        self.state = state
        self.clients = clients
        self.sites = sites

    def cmd_upload_app(self, request: Request) -> str:
        app = check_app_name(request.arg("app", str))
        unpack_app(request.arg("archive", bytes), self.workspace.transfer_dir / app)
        log.info("staged app %s", app)
        return f"uploaded app {app} to {self.workspace.transfer_dir / app}"

    def cmd_list_apps(self, request: Request) -> list[str]:
        folder = self.workspace.transfer_dir
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def cmd_set_run_number(self, request: Request) -> dict[str, Any]:
        run = request.arg("run", int)
        if run < 1:
            raise BadRequest(f"run number must be >= 1, got {run}")
        with self.state.lock:
            if self.state.running:
                raise BadRequest(f"cannot change the run number while the app is {self.state.status.value}")
            run_dir = self.workspace.run_dir(run)
            existed = run_dir.is_dir()
            run_dir.mkdir(parents=True, exist_ok=True)
            if run != self.state.run_number:
                self.state.app_name = self._deployed_app_of(run)
            self.state.run_number = run
            self.state.save()
        server = f"run_{run} exists already" if existed else f"Created a new run folder: run_{run}"
        return {"server": server, "clients": self.sites.ask(self.clients.alive(), "set_run_number", {"run": run})}

    def cmd_delete_run_number(self, request: Request) -> str:
        run = request.arg("run", int)
        with self.state.lock:
            if run == self.state.run_number and self.state.status != EngineStatus.STOPPED:
                raise BadRequest(f"run {run} is the running one")
            run_dir = self.workspace.run_dir(run)
            if not run_dir.is_dir():
                raise BadRequest(f"run_{run} does not exist")
            shutil.rmtree(run_dir)
            if run == self.state.run_number:
                self.state.run_number, self.state.app_name = None, None
            self.state.save()
        return f"deleted run_{run}"

    def cmd_deploy_app(self, request: Request) -> dict[str, Any]:
        app = check_app_name(request.arg("app", str))
        targets = self.sites.targets(request)
        run, staged = self._deployable(app)
        return self.sites.dispatch(
            targets,
            server=lambda: self._deploy_to_server(app, staged),
            clients=lambda sites: self.sites.ask(sites, "deploy_app", self._client_deployment(app, run, staged)),
        )

    @staticmethod
    def _client_deployment(app: str, run: int, staged: Path) -> dict[str, Any]:
        return {"app": app, "run": run, "archive": pack_app(staged)}

    def _deployable(self, app: str) -> tuple[int, Path]:
        """The run to deploy `app` to and its staged folder; BadRequest if it cannot be deployed now."""
        with self.state.lock:
            if self.state.run_number is None:
                raise BadRequest("set a run number first (set_run_number N)")
            staged = self.workspace.transfer_dir / app
            if not staged.is_dir():
                raise BadRequest(f"app {app} is not uploaded (upload_app {app})")
            if self.state.status != EngineStatus.STOPPED:
                raise BadRequest(f"cannot deploy while the server app is {self.state.status.value}")
            return self.state.run_number, staged

    def _deploy_to_server(self, app: str, staged: Path) -> str:
        with self.state.lock:
            run, _ = self._deployable(app)  # checked again under the same lock as the change
            app_dir = self.workspace.app_dir(run)
            shutil.rmtree(app_dir, ignore_errors=True)
            shutil.copytree(staged, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
            (self.workspace.run_dir(run) / APP_MARKER).write_text(app + "\n", encoding="utf-8")
            self.state.app_name = app
            self.state.run_sites = set()
            self.state.save()
        return f"deployed {app} to the server (run_{run})"

    def _deployed_app_of(self, run: int) -> str | None:
        marker = self.workspace.run_dir(run) / APP_MARKER
        return marker.read_text(encoding="utf-8").strip() or None if marker.is_file() else None
