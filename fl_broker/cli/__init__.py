"""The `fl-broker` command: a thin dispatcher, and the one place that knows every program."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from fl_broker import __version__
from fl_broker.transport import Transport


def _make_worker(site: str, workspace_root: Path, transport: Transport) -> Any:
    from workers.worker import ClientWorker, worker_workspace

    return ClientWorker(
        site=site, workspace=worker_workspace(workspace_root, site), transport=transport, heartbeat_interval=1.0
    )


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with each option's default (unless its help text already names one), passwords in URLs
    masked: a default may come from FL_BROKER_URL."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"

    def _expand_help(self, action: argparse.Action) -> str:
        return re.sub(r"(://[^:/@\s]*):[^@/\s]*@", r"\1:***@", super()._expand_help(action))


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their options."""
    from admin import main as admin_main
    from fl_broker.cli import poc, provision, simulate, status
    from fl_broker.server import main as server
    from workers import main as worker_main

    parser = argparse.ArgumentParser(
        prog="fl-broker", description="Federated learning over RabbitMQ.", formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"fl-broker {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=summary, formatter_class=HelpFormatter)

    server.add_arguments(command("server", "run the FL server"))
    worker_main.add_arguments(command("worker", "run a client worker"))
    simulate.add_arguments(command("simulate", "run an app in one process, no broker"))
    poc.add_arguments(command("poc", "run an app with real processes on a local RabbitMQ"))
    admin_main.add_arguments(command("admin", "the admin console of a running federation"))
    provision.add_arguments(command("provision", "broker users, env files and definitions"))
    status.add_arguments(command("status", "queue depths, consumers and rates from the broker"))
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
