"""Formatting command outcomes: rich renderables for people, one JSON object per command for scripts."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from admin import metrics_view
from admin.commands import COMMANDS, Outcome, failed_sites
from fl_broker.apps import workspace_shell

_RESERVED = ("command", "ok", "error")


def to_json(outcome: Outcome) -> str:
    """One line of JSON: command, ok, error, and the reply (a dict reply's keys at the top level)."""
    obj: dict[str, Any] = {}
    if isinstance(outcome.data, dict):
        obj.update({k: v for k, v in outcome.data.items() if k not in _RESERVED})
    elif outcome.data is not None:
        obj["result"] = outcome.data
    obj.update(command=outcome.line, ok=outcome.ok)
    if outcome.error:
        obj["error"] = outcome.error
    return json.dumps(obj, default=str, sort_keys=False)


def render(outcome: Outcome) -> RenderableType:
    """What a person sees for an outcome: the reply as tables/panels, then the error (if any) in red."""
    parts: list[RenderableType] = []
    if outcome.data is not None:
        parts.append(_render_data(outcome.command, outcome.data))
    if outcome.error and not failed_sites(outcome.data):
        parts.append(Text(f"Error: {outcome.error}", style="bold red"))
    return Group(*parts)


def _render_data(command: str, data: Any) -> RenderableType:
    if command in workspace_shell.COMMANDS and isinstance(data, str):  # a file's lines, as they are
        return Text(data) if data else Text("(nothing)", style="dim")
    if isinstance(data, str):
        return Text(data, style="green")
    if command == "download_model" and isinstance(data, dict) and "folder" in data:
        return downloaded(data)
    if command == "list_apps":
        return _list_table("Staged apps", data, "no app is staged (upload_app APP)")
    if command == "show_errors":
        return _list_table("Server errors", data, "no errors")
    if command == "check_status" and isinstance(data, dict) and "engine_status" in data:
        return server_status(data)
    if command == "show_metrics" and isinstance(data, dict) and "rounds" in data:
        return metrics_view.show_metrics(data)
    if command in ("sys_info", "show_stats") and isinstance(data, dict) and "clients" not in data:
        return key_values(command, data)
    if isinstance(data, dict):
        return _target_replies(command, data)
    return Text(json.dumps(data, default=str))


def downloaded(data: dict[str, Any]) -> RenderableType:
    """download_model: where the files went, what they hold, and a small model's values."""
    where = Text(f"run {data.get('run')}: the global model is saved in {data.get('folder')}", style="green")
    table = Table()
    for column in ("File", "Bytes", "Array"):
        table.add_column(column, justify="right" if column == "Bytes" else "left")
    values = []
    for row in data.get("files") or []:
        table.add_row(_cell(row.get("name")), _cell(row.get("bytes")), _cell(row.get("array")))
        if row.get("values"):
            values.append(Text(f"{row.get('name')}:\n{row['values']}"))
    return Group(where, table, *values)


def _list_table(title: str, rows: list[Any], empty: str) -> RenderableType:
    if not rows:
        return Text(empty, style="dim")
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("Name")
    for index, row in enumerate(rows, 1):
        table.add_row(str(index), str(row))
    return table


def key_values(title: str, data: dict[str, Any]) -> RenderableType:
    """A two-column table of a flat dict."""
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        table.add_row(key, _cell(value))
    return Panel(table, title=title, expand=False)


def server_status(data: dict[str, Any]) -> RenderableType:
    """check_status server: the engine, the run and its rounds, the latest round's metrics, and the registered
    clients."""
    summary = {
        "Engine status": data.get("engine_status"),
        "App": data.get("app_name") or "-",
        "Run number": data.get("run_number") or "-",
        "Phase": data.get("phase") or "-",
        **({"Failure": data["failure"]} if data.get("failure") else {}),
        **rounds(data),
        "Errors": data.get("errors", 0),
        **servers(data),
    }
    latest = data.get("metrics")
    shown = [metrics_view.latest_metrics(latest)] if isinstance(latest, dict) and latest.get("sites") else []
    return Group(key_values("Server", summary), *shown, client_rows(data.get("registered_clients") or []))


def servers(data: dict[str, Any]) -> dict[str, str]:
    """The active server (host, pid, since when) and how many standby servers wait, when the server says."""
    active = data.get("active_server")
    if not isinstance(active, dict):
        return {}
    since = time.strftime("%H:%M:%S", time.localtime(active.get("since") or 0))
    standbys = data.get("standby_servers")
    where = f"{active.get('host')} pid {active.get('pid')}"
    return {
        "Active server": f"{where} (since {since}, takeover {active.get('epoch')})",
        "Standby servers": "?" if standbys is None else str(standbys),
    }


def rounds(data: dict[str, Any]) -> dict[str, str]:
    """'Rounds done' always; 'Current round' only while a run is going (after one it is just the last one
    that ran, which reads like an unfinished round next to 'finished')."""
    total = data.get("num_rounds")
    done = data.get("rounds_done") if total is not None else None  # no run yet: no count either
    shown = {"Rounds done / num_rounds": f"{_cell(done)} / {_cell(total)}"}
    if data.get("engine_status") in ("starting", "started"):
        shown["Current round"] = _cell(data.get("current_round"))
    return shown


def client_rows(registered: list[dict[str, Any]]) -> RenderableType:
    """The registered clients, or one line saying there is none."""
    if not registered:
        return Text("no client is registered", style="dim")
    clients = Table(title="Registered clients", title_justify="left")
    for column in ("Site", "Alive", "Last heartbeat", "App", "Run", "Status"):
        clients.add_column(column)
    for row in registered:
        clients.add_row(
            str(row.get("site")),
            "yes" if row.get("alive", True) else "[red]no[/red]",
            heartbeat(row),
            _cell(row.get("app")),
            _cell(row.get("run")),
            _cell(row.get("status")),
        )
    return clients


def heartbeat(row: dict[str, Any]) -> str:
    """'12:03:04 (1.2 s ago)' from a registered client row (always one decimal, so ages line up)."""
    stamp = row.get("last_heartbeat")
    clock = time.strftime("%H:%M:%S", time.localtime(stamp)) if isinstance(stamp, (int, float)) else "-"
    ago = row.get("seconds_since_heartbeat")
    return f"{clock} ({ago:.1f} s ago)" if isinstance(ago, (int, float)) else clock


def _target_replies(command: str, data: dict[str, Any]) -> RenderableType:
    parts: list[RenderableType] = []
    if "server" in data:
        parts.append(Text(f"server: {data['server']}", style="green"))
    clients = data.get("clients")
    if isinstance(clients, dict):
        parts.append(client_table(command, clients))
    rest = {k: v for k, v in data.items() if k not in ("server", "clients")}
    if rest:
        parts.append(key_values(command, rest))
    return Group(*parts)


def client_table(command: str, clients: dict[str, Any]) -> RenderableType:
    """One row per site: its answer, or its error ('no reply' for a silent site)."""
    if not clients:
        return Text(f"{command}: no client to ask (none is registered)", style="dim")
    sysinfo, status_only = command == "sys_info", command == "check_status"
    table = Table(title=f"{command}: clients", title_justify="left")
    # check_status answers with a status only: a Result column would stay empty
    columns = ("Site", "Info") if sysinfo else ("Site", "App", "Run", "Status") if status_only else _COLUMNS
    for column in columns:
        table.add_column(column)
    for site, answer in sorted(clients.items()):
        if not answer.get("ok"):
            table.add_row(site, f"[red]{_escape(str(answer.get('error')))}[/red]", *[""] * (len(columns) - 2))
            continue
        result = answer.get("result")
        if sysinfo:
            table.add_row(site, _escape(", ".join(f"{k}={v}" for k, v in (result or {}).items())))
            continue
        result = result if isinstance(result, dict) else {"message": result}
        raw_status = result.get("status")
        status: dict[str, Any] = raw_status if isinstance(raw_status, dict) else {}
        cells = [_cell(v) for v in (status.get("app"), status.get("run"), _status_text(status))]
        message = [] if status_only else [_escape(str(result.get("message") or "ok"))]
        table.add_row(site, *message, *cells)
    return table


_COLUMNS = ("Site", "Result", "App", "Run", "Status")


def _status_text(status: dict[str, Any]) -> str:
    task = status.get("task")
    return f"{status.get('status')} ({task})" if task else _cell(status.get("status"))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return _escape(str(value))


def _escape(text: str) -> str:
    return escape(text)


def help_text(name: str | None = None) -> RenderableType:
    """`help`: every command with its usage; `help CMD`: that command."""
    if name is not None:
        command = COMMANDS[name]
        return Panel(Text(f"{command.usage}\n\n{command.summary}"), title=f"help {name}", expand=False)
    table = Table(title="Commands", title_justify="left")
    table.add_column("Usage", style="bold")
    table.add_column("What it does")
    for command in COMMANDS.values():
        table.add_row(_escape(command.usage), command.summary)
    return table
