"""`fl-broker admin`: connect with the admin's broker credentials, then run the console."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.text import Text

from admin.commands import Fetcher, split_script
from admin.console import AdminConsole, Identity, install_readline
from fl_broker.errors import AuthenticationFailed, FlBrokerError, TransportError
from fl_broker.logs import configure_logging
from fl_broker.program import add_broker_argument
from fl_broker.protocol.control import RequestClient
from fl_broker.transport import Transport, TransportOptions, connect
from fl_broker.transport.urls import split_broker_urls

EXIT_FAILED, EXIT_NO_CONNECTION = 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """admin's options."""
    parser.add_argument(
        "--workspace", type=Path, required=True, help="workspace root (transfer dir: WS/admin/transfer)"
    )
    add_broker_argument(parser)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server's reply")
    parser.add_argument("-c", dest="commands", metavar="COMMANDS", help='run "cmd; cmd; ..." and exit')
    parser.add_argument("--script", type=Path, help="run the commands of FILE (one a line) and exit")
    parser.add_argument("--json", action="store_true", help="print one JSON object per command")


def describe_broker(url: str) -> Identity:
    """The login and host/vhost of `url`, without the password."""
    if url.startswith("memory://"):
        return Identity("guest", f"in-process broker {url[len('memory://') :]!r}")
    urls = split_broker_urls(url)
    url = urls[0]
    more = f" (+{len(urls) - 1} more nodes)" if len(urls) > 1 else ""
    parts = urllib.parse.urlsplit(url)
    vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = urllib.parse.unquote(parts.username or "guest")
    return Identity(user, f"{parts.scheme}://{host}{port}{more} vhost {vhost}")


class Connection:
    """The admin's transport and request client; `reconnect()` replaces both when the transport gave up."""

    def __init__(self, url: str, timeout: float, opener: Callable[..., Transport] | None = None) -> None:
        self.url, self.opener = url, opener or connect
        # A few quick attempts: an admin wants a clear answer, not an endless retry loop.
        self.options = TransportOptions(
            connect_attempts=6, backoff_initial=0.5, backoff_max=2.0, publish_timeout=max(timeout, 1.0)
        )
        self.transport = self.opener(url, options=self.options)
        self.client = RequestClient(self.transport)

    def reconnect(self) -> RequestClient:
        """Close the old connection and open a new one (raises TransportError if the broker is still away)."""
        self.close()
        self.transport = self.opener(self.url, options=self.options)
        self.client = RequestClient(self.transport)
        return self.client

    def close(self) -> None:
        """Close quietly (the connection may already be dead)."""
        try:
            self.client.close()
            self.transport.close()
        except FlBrokerError:
            pass


def main(args: argparse.Namespace, *, out: Console | None = None) -> int:
    """Run the admin console; exit code 0 if every command succeeded, 1 if one failed, 2 if no connection."""
    out = out or Console(highlight=False)
    workspace = args.workspace.resolve()
    transfer = workspace / "admin" / "transfer"
    transfer.mkdir(parents=True, exist_ok=True)
    configure_logging(workspace / "admin" / "log.txt", console=False)
    identity = describe_broker(args.broker)
    try:
        connection = Connection(args.broker, args.timeout)
    except AuthenticationFailed:
        return _no_connection(
            out, args, f"The broker refused the credentials of user {identity.user!r} ({identity.where})."
        )
    except (TransportError, ValueError) as exc:
        return _no_connection(
            out, args, f"Cannot connect to {identity.where}: {_strip_password(str(exc), args.broker)}"
        )
    identity = Identity(connection.transport.user, identity.where)
    fetcher = Fetcher(connection.client, timeout=args.timeout, transfer_dir=transfer)
    fetcher.reconnect = connection.reconnect
    scripted = args.commands is not None or args.script is not None
    console = AdminConsole(fetcher, identity, out=out, json_mode=args.json, interactive=not scripted)
    try:
        if scripted:  # no banner: a script's output is its commands' answers only
            return _run_script(console, args)
        save_history = install_readline(console, workspace / "admin" / ".history")
        try:
            return console.loop()
        finally:
            save_history()
    finally:
        connection.close()


def _no_connection(out: Console, args: argparse.Namespace, message: str) -> int:
    if args.json:
        out.print(json.dumps({"command": "connect", "ok": False, "error": message}), markup=False, highlight=False)
    else:
        out.print(Text(message, style="red"), soft_wrap=True)
    return EXIT_NO_CONNECTION


def _run_script(console: AdminConsole, args: argparse.Namespace) -> int:
    if args.script is not None:
        try:
            text = args.script.read_text(encoding="utf-8")
        except OSError as exc:
            console.out.print(f"[red]Cannot read the script {args.script}: {exc.strerror}[/red]")
            return EXIT_FAILED
    else:
        text = args.commands
    return console.run_lines(split_script(text))


def _strip_password(text: str, url: str) -> str:
    password = urllib.parse.urlsplit(url).password if "://" in url else None
    return text.replace(password, "***") if password else text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="fl-broker admin")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
