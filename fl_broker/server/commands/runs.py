"""Running: start the app on the server and the sites, abort, shut down."""

from __future__ import annotations

import threading
from typing import Any

from fl_broker.protocol.control import BadRequest, Request
from fl_broker.server.fanout import SiteFanout, Targets
from fl_broker.server.runs import RunControl
from fl_broker.server.sessions import ClientRegistry
from fl_broker.server.state import EngineState, EngineStatus


class RunCommands:
    """start_app, abort, abort_task, shutdown, restart."""

    def __init__(
        self,
        *,
        state: EngineState,
        clients: ClientRegistry,
        sites: SiteFanout,
        runs: RunControl,
        shutdown_requested: threading.Event,
        restart_requested: threading.Event,
    ) -> None:
        self.state = state
        self.clients = clients
        self.sites = sites
        self.runs = runs
        self.shutdown_requested = shutdown_requested
        self.restart_requested = restart_requested  # with shutdown_requested: the program starts itself again

    def cmd_start_app(self, request: Request) -> dict[str, Any]:
        return self.sites.dispatch(
            self.sites.targets(request), server=self.runs.start_server_app, clients=self._start_clients
        )

    def _start_clients(self, sites: list[str]) -> dict[str, Any]:
        with self.state.lock:
            if self.state.status != EngineStatus.STARTED:
                # A run that failed at its first step (before its sites were started) ends up here: say why.
                failure = self.runs.progress.failure
                last = f"; its last run failed: {failure}" if failure else ""
                raise BadRequest(f"start the server app first (start_app server){last}")
            run = self.state.run_number
        with self.clients.holding(sites, run):
            answers = self.sites.ask(sites, "start_app", {"run": run})
        with self.state.lock:
            self.state.run_sites.update(site for site, answer in answers.items() if answer["ok"])
            self.state.save()
        return answers

    def cmd_abort(self, request: Request) -> dict[str, Any]:
        return self.sites.dispatch(
            self.sites.targets(request), server=self.runs.abort, clients=self.sites.forward("abort")
        )

    def cmd_abort_task(self, request: Request) -> dict[str, Any]:
        site = request.arg("site", str)
        if site not in {row["site"] for row in self.clients.snapshot()}:
            raise BadRequest(f"{site} is not registered")
        return {"clients": self.sites.ask([site], "abort_task", {})}

    def cmd_shutdown(self, request: Request) -> dict[str, Any]:
        targets = self.sites.targets(request)
        return self.sites.dispatch(
            targets, server=lambda: self._shutdown_server(targets), clients=self._shutdown_clients, clients_first=True
        )

    def _shutdown_clients(self, sites: list[str]) -> dict[str, Any]:
        answers = self.sites.ask(sites, "shutdown", {})
        for site, answer in answers.items():
            if answer["ok"]:
                self.clients.remove(site, "shut down")  # it said goodbye: no need to wait out its grace period
        return answers

    def _shutdown_server(self, targets: Targets) -> str:
        alive = [] if targets.clients else self.clients.alive()  # with `all` the clients were just told
        if alive:
            raise BadRequest(f"clients are still connected ({', '.join(alive)}): shut them down first")
        self.runs.stop("server shutting down")
        self.shutdown_requested.set()
        return "shutting down"

    def cmd_restart(self, request: Request) -> dict[str, Any]:
        targets = self.sites.targets(request)
        with self.state.lock:
            if self.state.running:
                status = self.state.status.value
                raise BadRequest(f"run {self.state.run_number} is {status}: abort it first (abort all)")
        return self.sites.dispatch(
            targets, server=self._restart_server, clients=self._restart_clients, clients_first=True
        )

    def _restart_clients(self, sites: list[str]) -> dict[str, Any]:
        answers = self.sites.ask(sites, "restart", {})
        for site, answer in answers.items():
            if answer["ok"]:
                self.clients.remove(site, "restarting")  # it registers again, with a new session
        return answers

    def _restart_server(self) -> str:
        self.restart_requested.set()
        self.shutdown_requested.set()
        return "restarting: the server answers again in a few seconds (the sites register again by themselves)"
