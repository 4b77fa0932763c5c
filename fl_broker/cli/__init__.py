"""The `fl-broker` command: a thin dispatcher, and the one place that knows every program."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fl_broker.transport import Transport


def _make_worker(site: str, workspace_root: Path, transport: Transport) -> Any:
    from workers.worker import ClientWorker, worker_workspace

    return ClientWorker(
        site=site, workspace=worker_workspace(workspace_root, site), transport=transport, heartbeat_interval=1.0
    )


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their options."""
    from admin import main as admin_main
    from fl_broker.cli import poc, provision, simulate, status
    from fl_broker.server import main as server
    from workers import main as worker_main

    parser = argparse.ArgumentParser(prog="fl-broker", description="Federated learning over RabbitMQ.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server.add_arguments(commands.add_parser("server", help="run the FL server"))
    worker_main.add_arguments(commands.add_parser("worker", help="run a client worker"))
    simulate.add_arguments(commands.add_parser("simulate", help="run an app in one process, no broker"))
    poc.add_arguments(commands.add_parser("poc", help="run an app with real processes on a local RabbitMQ"))
    admin_main.add_arguments(commands.add_parser("admin", help="the admin console of a running federation"))
    provision.add_arguments(commands.add_parser("provision", help="broker users, env files and definitions"))
    status.add_arguments(commands.add_parser("status", help="queue depths, consumers and rates from the broker"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fl-broker` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "server":
        from fl_broker.server import main as server

        return server.main(args)
    if args.command == "worker":
        from workers import main as worker_main

        return worker_main.main(args)
    if args.command == "admin":
        from admin import main as admin_main

        return admin_main.main(args)
    if args.command == "provision":
        from fl_broker.cli import provision

        return provision.main(args)
    if args.command == "status":
        from fl_broker.cli import status

        return status.main(args)
    if args.command == "simulate":
        from fl_broker.cli import simulate

        return simulate.main(args, _make_worker)
    from fl_broker.cli import poc

    return poc.main(args)


if __name__ == "__main__":
    sys.exit(main())
