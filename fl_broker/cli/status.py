"""`fl-broker status`: the broker's view of a federation, from the RabbitMQ management HTTP API."""

from __future__ import annotations

import argparse
import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fl_broker.errors import StatusError
from fl_broker.ops.provision import read_env_file
from fl_broker.wire import names

_COLUMNS = "name,messages,messages_ready,messages_unacknowledged,consumers,message_stats"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """status's options."""
    parser.add_argument("--mgmt-url", help="management API base URL, e.g. http://127.0.0.1:15672")
    parser.add_argument("--user", help="management user (default: from --env-file or FL_BROKER_URL)")
    parser.add_argument("--password", help="its password (prefer --env-file: command lines are visible)")
    parser.add_argument("--env-file", type=Path, help="an env file written by `fl-broker provision` (admin.env)")
    parser.add_argument("--vhost", help=f"virtual host (default {names.DEFAULT_VHOST})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _settings(args: argparse.Namespace) -> tuple[str, str, str, str]:
    env: dict[str, str] = dict(os.environ)
    if args.env_file:
        env.update(read_env_file(args.env_file))
    url = urllib.parse.urlsplit(env.get("FL_BROKER_URL", ""))
    user = args.user or urllib.parse.unquote(url.username or "") or "guest"
    password = args.password or urllib.parse.unquote(url.password or "") or "guest"
    mgmt = args.mgmt_url or env.get("FL_MGMT_URL") or f"http://{url.hostname or '127.0.0.1'}:15672"
    vhost = args.vhost or env.get("FL_VHOST") or names.DEFAULT_VHOST
    return mgmt.rstrip("/"), user, password, vhost


def fetch(mgmt_url: str, user: str, password: str, path: str) -> Any:
    """GET a management API path as `user`; decoded JSON."""
    request = urllib.request.Request(mgmt_url + path)
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise StatusError(f"GET {path}: HTTP {exc.code} {exc.reason}") from exc
    except (OSError, ValueError) as exc:
        raise StatusError(f"cannot reach the management API at {mgmt_url}: {exc}") from exc


def _rate(stats: dict[str, Any], key: str) -> float:
    return float((stats.get(f"{key}_details") or {}).get("rate", 0.0))


def _owner(queue: str) -> str:
    """Which participant a queue belongs to: a site, the server, or '-' for shared queues."""
    for prefix in ("fl.task.", "fl.control."):
        if queue.startswith(prefix):
            return queue[len(prefix) :]
    if queue in (names.SERVER_RESULT_QUEUE, names.SERVER_LOCK_QUEUE, names.SERVER_STANDBY_QUEUE):
        return names.SERVER
    if queue.startswith("fl.private."):
        return queue.split(".")[2]
    return "-"


def collect(mgmt_url: str, user: str, password: str, vhost: str) -> dict[str, Any]:
    """Queues of `vhost` (depths, consumers, rates), grouped by owner, plus the event history depth."""
    quoted = urllib.parse.quote(vhost, safe="")
    raw = fetch(mgmt_url, user, password, f"/api/queues/{quoted}?columns={_COLUMNS}")
    queues = []
    for q in sorted(raw, key=lambda q: (_owner(q["name"]), q["name"])):
        stats = q.get("message_stats") or {}
        queues.append(
            {
                "queue": q["name"],
                "owner": _owner(q["name"]),
                "ready": int(q.get("messages_ready") or 0),
                "unacked": int(q.get("messages_unacknowledged") or 0),
                "consumers": int(q.get("consumers") or 0),
                "publish_rate": _rate(stats, "publish"),
                "deliver_rate": _rate(stats, "deliver_get"),
                "ack_rate": _rate(stats, "ack"),
            }
        )
    sites = sorted(
        {q["owner"] for q in queues if q["queue"].startswith(("fl.task.", "fl.control.")) and q["owner"] != "server"}
    )
    history = next((q for q in queues if q["queue"] == names.EVENT_HISTORY_QUEUE), None)
    return {
        "vhost": vhost,
        "sites": sites,
        "event_history": history["ready"] if history else None,
        "queues": queues,
    }


def render(console: Console, status: dict[str, Any]) -> None:
    table = Table(title=f"fl-broker queues on vhost {status['vhost']}")
    for column in ("owner", "queue", "ready", "unacked", "consumers", "publish/s", "deliver/s", "ack/s"):
        left = column in ("owner", "queue")
        table.add_column(column, justify="left" if left else "right", no_wrap=column == "queue")
    for q in status["queues"]:
        style = "yellow" if q["consumers"] == 0 and q["queue"].startswith(("fl.task.", "fl.control.")) else None
        table.add_row(
            q["owner"],
            q["queue"],
            str(q["ready"]),
            str(q["unacked"]),
            str(q["consumers"]),
            f"{q['publish_rate']:.1f}",
            f"{q['deliver_rate']:.1f}",
            f"{q['ack_rate']:.1f}",
            style=style,
        )
    console.print(table)
    history = status["event_history"]
    console.print(
        f"sites: {', '.join(status['sites']) or '(none)'}; events kept in {names.EVENT_HISTORY_QUEUE}: "
        f"{'-' if history is None else history}"
    )


def main(args: argparse.Namespace) -> int:
    """Print the status table (or JSON); 1 if the management API cannot be used."""
    console = Console()
    mgmt, user, password, vhost = _settings(args)
    try:
        status = collect(mgmt, user, password, vhost)
    except StatusError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        render(console, status)
    return 0
