"""Commands that address the server, the client sites or both (`target`: server, client, all), and the
one way the server asks many sites at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from fl_broker.errors import FlBrokerError, RemoteError
from fl_broker.protocol.control import BadRequest, Request, RequestClient
from fl_broker.server.sessions import ClientRegistry
from fl_broker.transport import Transport
from fl_broker.wire import names

TARGETS = ("server", "client", "all")

ServerStep = Callable[[], Any]
ClientStep = Callable[[list[str]], dict[str, Any]]  # sites -> per site {"ok": ..., "result" | "error": ...}


@dataclass(frozen=True)
class Targets:
    """Whom a command addresses: `target` is server, client or all; `sites` the client sites."""

    target: str
    sites: list[str]

    @property
    def server(self) -> bool:
        """Whether the server itself is addressed."""
        return self.target in ("server", "all")

    @property
    def clients(self) -> bool:
        """Whether the client sites are addressed."""
        return self.target in ("client", "all")


class SiteFanout:
    """Reads a command's target, runs its server and client steps, and sends requests to sites."""

    def __init__(
        self, transport: Transport, clients: ClientRegistry, *, timeout: float, run: Callable[[], int | None]
    ) -> None:
        self.transport = transport
        self.clients = clients
        self.timeout = timeout  # how long to wait for the sites' replies
        self._run = run  # the current run number, sent with every request
        self._requests: RequestClient | None = None

    def start(self) -> None:
        """Open the reply queue (after the topology is declared)."""
        self._requests = RequestClient(self.transport)

    def close(self) -> None:
        """Stop listening for replies; pending requests end as cancelled."""
        if self._requests is not None:
            self._requests.close()

    def targets(self, request: Request, default: str = "all") -> Targets:
        """The `target` and `sites` arguments of `request`. Without `sites`: the live sites, or for
        check_status every registered one (a silent site then shows "no reply")."""
        target = request.arg("target", str, default)
        if target not in TARGETS:
            raise BadRequest(f"{request.command}: target must be server, client or all, got {target!r}")
        sites = request.arg("sites", list, [])
        if not sites:
            all_registered = request.command == "check_status"
            sites = [row["site"] for row in self.clients.snapshot()] if all_registered else self.clients.alive()
        return Targets(target, [names.check_site_name(str(s)) for s in sites])

    def dispatch(
        self,
        targets: Targets,
        *,
        server: ServerStep | None = None,
        clients: ClientStep | None = None,
        clients_first: bool = False,
    ) -> dict[str, Any]:
        """Run the steps the targets ask for: {"server": server(), "clients": clients(sites)}, with only the
        keys addressed (and given). The server step runs first unless `clients_first`."""
        steps: list[tuple[str, Callable[[], Any]]] = []
        if server is not None and targets.server:
            steps.append(("server", server))
        if clients is not None and targets.clients:
            step = clients
            steps.append(("clients", lambda: step(targets.sites)))
        if clients_first:
            steps.reverse()
        return {key: run() for key, run in steps}

    def forward(self, command: str, args: dict[str, Any] | None = None) -> ClientStep:
        """A client step that sends `command` with `args` to the sites."""
        return lambda sites: self.ask(sites, command, args or {})

    def ask(self, sites: list[str], command: str, args: dict[str, Any]) -> dict[str, Any]:
        """Send `command` to every site at once; per site its result, or the error ('no reply')."""
        if self._requests is None:
            raise RuntimeError("SiteFanout.start() was not called")
        run = self._run() or 0
        futures: dict[str, Future[Any]] = {}
        answers: dict[str, Any] = {}
        for site in sites:
            try:
                futures[site] = self._requests.request(site, command, args, run=run, ttl=self.timeout)
            except FlBrokerError as exc:
                answers[site] = {"ok": False, "error": f"could not reach {site}: {exc}"}
        deadline = time.monotonic() + self.timeout
        for site, future in futures.items():
            answers[site] = self._answer(site, future, deadline)
        return answers

    def _answer(self, site: str, future: Future[Any], deadline: float) -> dict[str, Any]:
        try:
            result = future.result(max(0.0, deadline - time.monotonic()))
        except RemoteError as exc:
            return {"ok": False, "error": exc.message}
        except FutureTimeout:
            future.cancel()
            return {"ok": False, "error": "no reply"}
        except CancelledError:  # the server is closing
            return {"ok": False, "error": "cancelled: the server is shutting down"}
        if isinstance(result, dict) and isinstance(result.get("status"), dict):
            self.clients.update_status(site, result["status"])
        return {"ok": True, "result": result}
