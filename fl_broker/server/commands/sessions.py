"""Client sessions: workers register and heartbeat; the admin may forget a site."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fl_broker.protocol.control import BadRequest, Request
from fl_broker.server.sessions import ClientRegistry
from fl_broker.wire import names

log = logging.getLogger(__name__)

# Sent by workers, checked against the site's own login; every other command is an admin command.
CLIENT_COMMANDS = frozenset({"register", "heartbeat"})


class SessionCommands:
    """register, heartbeat and remove_client. `seen(site, status)` is told of every live report, so a site
    of the running run that restarted can be brought back into it."""

    def __init__(self, *, clients: ClientRegistry, seen: Callable[[str, dict[str, Any]], None]) -> None:
        self.clients = clients
        self.seen = seen

    def cmd_register(self, request: Request) -> dict[str, Any]:
        site = names.check_site_name(request.arg("site", str))
        status = request.arg("status", dict, {})
        if self.clients.register(site, request.arg("session", str), status):
            log.info("%s re-registered; its old session is replaced", site)
        else:
            log.info("%s registered", site)
        self.seen(site, status)
        return {"server": "ok", "heartbeat_grace": self.clients.grace}

    def cmd_heartbeat(self, request: Request) -> dict[str, Any]:
        site, status = request.arg("site", str), request.arg("status", dict, {})
        known = self.clients.heartbeat(site, request.arg("session", str), status)
        if known:  # the newest report: a heartbeat queued behind a start_app reply must not look like a restart
            self.seen(site, self.clients.status_of(site))
        return {"known": known}

    def cmd_remove_client(self, request: Request) -> str:
        site = request.arg("site", str)
        if not self.clients.remove(site, "removed by the admin"):
            raise BadRequest(f"{site} is not registered")
        return f"removed {site}"
