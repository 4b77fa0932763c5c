"""The server engine: wires the run state (`state`), client sessions (`sessions`), run control (`runs`),
the fan-out to sites (`fanout`) and the command handlers (`commands/`) to the broker, and checks who may
send which command."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from fl_broker.apps.workspace import Workspace
from fl_broker.errors import Unauthorized
from fl_broker.protocol.control import Request, RequestHandler, RequestServer
from fl_broker.protocol.message import check_sender
from fl_broker.server.commands import collect
from fl_broker.server.commands.apps import AppCommands
from fl_broker.server.commands.metrics import MetricsCommands
from fl_broker.server.commands.runs import RunCommands
from fl_broker.server.commands.sessions import CLIENT_COMMANDS, SessionCommands
from fl_broker.server.commands.status import StatusCommands
from fl_broker.server.commands.workspace import WorkspaceCommands
from fl_broker.server.event_stream import EventStream
from fl_broker.server.fanout import SiteFanout
from fl_broker.server.runs import RunControl
from fl_broker.server.sessions import ClientRegistry
from fl_broker.server.standby import ActiveRole
from fl_broker.server.state import EngineState, EngineStatus
from fl_broker.server.task_channel import BrokerTaskChannel
from fl_broker.server.task_copies import RESEND_AFTER
from fl_broker.transport import Transport
from fl_broker.wire import names

log = logging.getLogger(__name__)

__all__ = ["EngineOptions", "EngineStatus", "ServerEngine", "Unauthorized"]

STATE_FILE = "engine.json"


@dataclass(frozen=True)
class EngineOptions:
    """Server tunables."""

    client_grace: float = 30.0  # seconds without a heartbeat before a site counts as gone
    site_timeout: float = 10.0  # how long the server waits for a site's reply to a forwarded command
    # Who may send admin commands (broker logins, checked by RabbitMQ through user_id); None: anyone.
    admin_users: frozenset[str] | None = None
    # Sites must connect with their own login (user_id == site name) to register, heartbeat and send results.
    enforce_site_users: bool = False
    # A site that reports holding no task this long after its copy of the round's task was sent never got
    # it: the copy is sent again (fl_broker/server/task_copies.py).
    task_resend_after: float = RESEND_AFTER


REPLY_MARGIN = 64 * 1024  # room for the envelope around the files download_model sends
RESULT_SPOOL = "spool/results"  # under the server's workspace: results being received, chunk by chunk


class ServerEngine:
    """The server's parts, wired together; `start()` serves results and control requests."""

    def __init__(
        self,
        *,
        workspace: Workspace,
        transport: Transport,
        options: EngineOptions | None = None,
        role: ActiveRole | None = None,
    ) -> None:
        self.workspace = workspace
        self.transport = transport
        self.options = options or EngineOptions()
        self.role = role  # with a standby: checked before every write, named by check_status
        self.shutdown_requested = threading.Event()
        self.restart_requested = threading.Event()  # set with shutdown_requested: main() starts the server again
        self._closing = threading.Event()
        self.state = EngineState(workspace.home / STATE_FILE, before_save=role.check if role else lambda: None)
        self.clients = ClientRegistry(self.options.client_grace)
        self.sites = SiteFanout(
            transport, self.clients, timeout=self.options.site_timeout, run=lambda: self.state.run_number
        )
        self._channel = BrokerTaskChannel(
            transport,
            enforce_site_users=self.options.enforce_site_users,
            spool_dir=workspace.home / RESULT_SPOOL,
            report=self.clients.report,
            resend_after=self.options.task_resend_after,
        )
        self._events = EventStream(transport)
        self.runs = RunControl(
            state=self.state,
            workspace=workspace,
            channel=self._channel,
            clients=self.clients,
            sites=self.sites,
            hooks=[role.on_event, self._events] if role else [self._events],
            shutting_down=self.shutdown_requested.is_set,
        )
        handlers = {command: self._guarded(command, h) for command, h in collect(*self._command_owners()).items()}
        self._requests = RequestServer(transport, names.SERVER_CONTROL_QUEUE, handlers)

    def _command_owners(self) -> list[object]:
        """Every object whose `cmd_*` methods are served (see fl_broker.server.commands)."""
        return [
            SessionCommands(clients=self.clients, seen=self.runs.maybe_rejoin),
            AppCommands(workspace=self.workspace, state=self.state, clients=self.clients, sites=self.sites),
            RunCommands(
                state=self.state,
                clients=self.clients,
                sites=self.sites,
                runs=self.runs,
                shutdown_requested=self.shutdown_requested,
                restart_requested=self.restart_requested,
            ),
            StatusCommands(
                state=self.state,
                clients=self.clients,
                sites=self.sites,
                runs=self.runs,
                servers=self.role.status if self.role else dict,
            ),
            MetricsCommands(workspace=self.workspace, state=self.state),
            WorkspaceCommands(
                workspace=self.workspace,
                state=self.state,
                clients=self.clients,
                sites=self.sites,
                max_bytes=self.transport.options.max_body_size - REPLY_MARGIN,
            ),
        ]

    @property
    def status(self) -> EngineStatus:
        """The server app's life cycle."""
        return self.state.status

    @property
    def run_number(self) -> int | None:
        """The current run number."""
        return self.state.run_number

    def start(self) -> None:
        """Declare the topology and start serving results and control requests."""
        self.workspace.transfer_dir.mkdir(parents=True, exist_ok=True)
        self.transport.declare(names.server_topology())
        self.sites.start()
        # Restore first: a resumed run must be open before results queued for it are consumed, or they
        # would be refused as belonging to no active run.
        saved = self.state.restore()
        if saved is not None and saved.running and saved.run_number and saved.app_name:
            self.runs.resume(saved.run_number)
        self._channel.start()
        self._requests.start()
        threading.Thread(target=self._watch_sessions, name="session-watch", daemon=True).start()
        log.info("server ready (workspace %s)", self.workspace.home)

    def _watch_sessions(self) -> None:
        """Look at the registry now and then, so that a site that stopped heartbeating is logged as gone
        soon after its grace period, not only when a command next asks who is alive."""
        interval = min(5.0, max(0.1, self.options.client_grace / 4))
        while not self._closing.wait(interval):
            self.clients.alive()

    def close(self) -> None:
        """Abort a running workflow and stop consuming."""
        self._closing.set()
        self.runs.stop("server shutting down")
        self.runs.join(timeout=30)
        self._requests.stop()
        self._channel.stop()
        self._events.close()
        self.sites.close()

    def _guarded(self, command: str, handler: RequestHandler) -> RequestHandler:
        """`handler`, preceded by the check that the sender's (broker-verified) login may call it."""

        def checked(request: Request) -> object:
            try:
                if command in CLIENT_COMMANDS:
                    site = request.args.get("site")
                    sender = (
                        (site if isinstance(site, str) else frozenset()) if self.options.enforce_site_users else None
                    )
                    check_sender(request.user_id, sender, f"{command} as site {site!r}")
                else:
                    check_sender(request.user_id, self.options.admin_users, f"admin command {command}")
            except Unauthorized as exc:
                log.warning("refused %s", exc)
                raise
            return handler(request)

        return checked
