"""`fl-broker provision --sites site-1,site-2 --out DIR`: broker users, env files and definitions."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from fl_broker.errors import InvalidSiteName
from fl_broker.ops import provision
from fl_broker.wire import names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """provision's options."""
    parser.add_argument("--sites", required=True, help="comma-separated site names, e.g. site-1,site-2")
    parser.add_argument("--server", default=names.SERVER, help="the server's broker login")
    parser.add_argument("--admin", default="admin", help="the admin's broker login")
    parser.add_argument("--out", type=Path, required=True, help="folder for definitions.json and <user>.env")
    parser.add_argument("--vhost", default=names.DEFAULT_VHOST, help="virtual host of the federation")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="broker host name as the programs reach it; a cluster's nodes comma-separated (one URL each)",
    )
    parser.add_argument("--port", type=int, help="AMQP port (default 5672, or 5671 with --tls)")
    parser.add_argument("--tls", action="store_true", help="amqps:// URLs (add the CA path with --tls-dir)")
    parser.add_argument("--tls-dir", help="where ca.pem will be on the participants' machines (FL_TLS_CA)")
    parser.add_argument(
        "--queue-type",
        choices=names.QUEUE_TYPE_CHOICES,
        default=names.AUTO,
        help="type of the durable queues; auto: quorum when --host names several nodes (a cluster), else "
        "classic; written as FL_QUEUE_TYPE to the env files",
    )
    parser.add_argument("--mgmt-url", help="management API URL for `fl-broker status` (default http://HOST:15672)")


def main(args: argparse.Namespace) -> int:
    """Write the files; print where they are and how to load them (never a secret)."""
    console = Console()
    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    try:
        plan = provision.make_plan(
            sites,
            server=args.server,
            admin=args.admin,
            vhost=args.vhost,
            host=args.host,
            port=args.port,
            tls=args.tls,
            mgmt_url=args.mgmt_url,
            queue_type=args.queue_type,
        )
    except (ValueError, InvalidSiteName) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    written = provision.write_plan(plan, args.out.resolve(), tls_dir=args.tls_dir)
    for path in written:
        console.print(f"wrote [cyan]{path}[/cyan] (mode 0600)")
    console.print(
        f"load the users, permissions and topology of vhost {plan.vhost} with\n"
        f"  rabbitmqctl import_definitions {written[0]}\n"
        "then give each program its env file (e.g. /etc/fl-broker/<name>.env for the systemd units)."
    )
    return 0
