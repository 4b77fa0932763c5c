"""The server program: `fl-broker server --workspace WS --broker URL`."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from fl_broker.apps.workspace import SERVER_DIR, Workspace
from fl_broker.errors import FlBrokerError
from fl_broker.logs import configure_logging
from fl_broker.ops.malloc_tuning import limit_heap_growth
from fl_broker.ops.tls import TlsFiles, add_tls_arguments
from fl_broker.program import (
    Relaunch,
    add_broker_argument,
    add_transport_arguments,
    run_until_stopped,
    transport_options,
)
from fl_broker.server.engine import EngineOptions, ServerEngine
from fl_broker.server.standby import ActiveRole
from fl_broker.server.task_copies import RESEND_AFTER
from fl_broker.transport import connect

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's command-line options."""
    parser.add_argument("--workspace", type=Path, required=True, help="workspace root (the server uses WS/server)")
    add_broker_argument(parser)
    parser.add_argument("--client-grace", type=float, default=30.0, help="seconds before a silent client is gone")
    parser.add_argument(
        "--task-resend-after",
        type=float,
        default=RESEND_AFTER,
        help="seconds a site may report holding no task before its copy of the round's task is sent again "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--admin-users",
        default=os.environ.get("FL_ADMIN_USERS") or None,
        help="comma-separated broker logins allowed to send admin commands (env FL_ADMIN_USERS)",
    )
    parser.add_argument(
        "--enforce-site-users",
        action="store_true",
        default=os.environ.get("FL_ENFORCE_SITE_USERS", "") in ("1", "true", "yes"),
        help="sites must use their own broker login (provisioned; env FL_ENFORCE_SITE_USERS=1)",
    )
    parser.add_argument(
        "--standby-poll",
        type=float,
        default=0.5,
        help="a standby server asks for the active role this often, in seconds (default: %(default)s)",
    )
    add_tls_arguments(parser)
    add_transport_arguments(parser)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--log-config", type=Path, help="a logging.config.fileConfig file")


def main(args: argparse.Namespace) -> int:
    """Run the server until a `shutdown server` request or SIGTERM/SIGINT (`restart server`: then again)."""
    relaunch = Relaunch.capture()
    workspace = Workspace(args.workspace.resolve(), SERVER_DIR)
    limit_heap_growth()
    configure_logging(workspace.log_file, level=args.log_level, config_file=args.log_config)
    try:
        tls = TlsFiles.from_values(args.tls_ca, args.tls_cert, args.tls_key)
        options = transport_options(args, "server")
        transport = connect(args.broker, options=options, tls=tls)
    except (FlBrokerError, OSError, ValueError) as exc:
        log.error("cannot connect to the broker: %s", exc)
        return 2
    role = ActiveRole(transport, workspace.home, poll=args.standby_poll)
    engine = ServerEngine(
        workspace=workspace,
        transport=transport,
        role=role,
        options=EngineOptions(
            client_grace=args.client_grace,
            admin_users=frozenset(u.strip() for u in args.admin_users.split(",")) if args.admin_users else None,
            enforce_site_users=args.enforce_site_users,
            task_resend_after=args.task_resend_after,
        ),
    )

    def start() -> None:
        # A standby waits here, consuming nothing but fl.server.standby, until the active server is gone.
        if role.wait_until_active(engine.shutdown_requested):
            engine.start()

    def close() -> None:
        transport.begin_close()  # a paused broker must not hold the steps below up (see Transport.begin_close)
        if role.active.is_set():
            engine.close()
        role.close()  # before the connection (and the lock) goes: a standby taking over is no fencing case
        transport.close()

    code = run_until_stopped(engine.shutdown_requested, start=start, close=close, failure=lambda: transport.failure)
    if code == 0 and engine.restart_requested.is_set():
        relaunch()
    log.info("server stopped")
    return code
