"""What the server reports: engine status and progress, statistics, system information, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fl_broker.ops.sysinfo import system_info
from fl_broker.protocol.control import Request
from fl_broker.server.fanout import SiteFanout
from fl_broker.server.runs import RunControl
from fl_broker.server.sessions import ClientRegistry
from fl_broker.server.state import EngineState


class StatusCommands:
    """check_status, show_stats, sys_info, show_errors, reset_errors, get_run_number. check_status and
    sys_info answer for the server, or with `target` client or all for the sites only (the console shows
    one or the other)."""

    def __init__(
        self,
        *,
        state: EngineState,
        servers: Callable[[], dict[str, Any]] = dict,
        clients: ClientRegistry,
        sites: SiteFanout,
        runs: RunControl,
    ) -> None:
        self.state = state
        self.servers = servers  # the active server and the standbys (server/standby.py), for check_status
        self.clients = clients
        self.sites = sites
        self.runs = runs

    def cmd_check_status(self, request: Request) -> dict[str, Any]:
        targets = self.sites.targets(request, default="server")
        if targets.clients:
            return self.sites.dispatch(targets, clients=self.sites.forward("check_status"))
        progress = self.runs.progress
        with self.state.lock:
            return {
                "engine_status": self.state.status.value,
                "app_name": self.state.app_name,
                "run_number": self.state.run_number,
                "phase": progress.phase.value,
                "current_round": progress.current_round,
                "num_rounds": progress.num_rounds,
                "rounds_done": progress.rounds_done,
                "failure": progress.failure,
                "metrics": self.runs.latest_metrics,
                "registered_clients": self.clients.snapshot(),
                "errors": self.state.error_count(),
                **self.servers(),
            }

    def cmd_show_stats(self, request: Request) -> dict[str, Any]:
        progress = self.runs.progress
        return {
            "phase": progress.phase.value,
            "current_round": progress.current_round,
            "num_rounds": progress.num_rounds,
            "rounds_done": progress.rounds_done,
            "start_round": progress.start_round,
            "run_number": self.state.run_number,
        }

    def cmd_sys_info(self, request: Request) -> dict[str, Any]:
        targets = self.sites.targets(request, default="server")
        if targets.clients:
            return self.sites.dispatch(targets, clients=self.sites.forward("sys_info"))
        return system_info()

    def cmd_show_errors(self, request: Request) -> list[str]:
        return self.state.errors()

    def cmd_reset_errors(self, request: Request) -> str:
        cleared = self.state.reset_errors()
        return f"cleared {cleared} error{'s' if cleared != 1 else ''}"

    def cmd_get_run_number(self, request: Request) -> dict[str, Any]:
        return {"run_number": self.state.run_number}
