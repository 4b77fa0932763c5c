"""The admin command set (FLARE 2.0 names): parsing a typed line into a request, and fetching its reply.

Nothing here prints: a command ends as an `Outcome` (data or an error message) that `render.py` formats.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from admin.download import save_model
from fl_broker.apps import workspace_shell
from fl_broker.apps.archive import UnsafeArchive, check_app_name, pack_app
from fl_broker.errors import (
    FlBrokerError,
    NotListening,
    PublishFailed,
    RemoteError,
    RequestTimeout,
    TransportError,
    UsageError,
)
from fl_broker.protocol.control import RequestClient
from fl_broker.wire import names

TARGETS = ("server", "client", "all")
MAX_TIMEOUT = 3600.0  # set_timeout's ceiling: a longer wait is a hung console, not patience


@dataclass
class Outcome:
    """How one command ended: the server's result as data, or an error message."""

    command: str
    line: str
    ok: bool = True
    data: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Command:
    """One console command: how it is typed, what it does, and which request it becomes."""

    name: str
    usage: str
    summary: str
    targets: tuple[str, ...] = ()  # sub-targets the command accepts (for parsing and completion)
    completes: str = ""  # what a free argument completes to: "app", "local_app", "site" or "participant"
    confirm: bool = False  # ask before doing it (interactive mode only)
    local: bool = False  # handled by the console itself, no request


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command(
            "upload_app", "upload_app APP", "send an app folder from the transfer dir to the server", (), "local_app"
        ),
        Command("list_apps", "list_apps", "apps staged on the server"),
        Command("set_run_number", "set_run_number N", "choose the run (N >= 1); creates run_N on every target"),
        Command("delete_run_number", "delete_run_number N", "delete run_N on the server (not the running one)"),
        Command("deploy_app", "deploy_app APP server | client [SITES] | all", "deploy a staged app", TARGETS, "app"),
        Command("start_app", "start_app server | client [SITES] | all", "start the deployed app", TARGETS),
        Command(
            "check_status",
            "check_status server | client [SITES]",
            "status of the server or the clients",
            ("server", "client"),
        ),
        Command("abort", "abort server | client [SITES] | all", "abort the running app", TARGETS),
        Command("abort_task", "abort_task SITE", "abort the task a client is running", (), "site"),
        Command(
            "shutdown", "shutdown client [SITES] | server | all", "stop clients or the server", TARGETS, confirm=True
        ),
        Command("remove_client", "remove_client SITE", "forget a registered client", (), "site"),
        Command("sys_info", "sys_info server | client [SITES]", "host information", ("server", "client")),
        Command("show_stats", "show_stats server", "phase and round of the running workflow", ("server",)),
        Command("show_errors", "show_errors server", "the server's recent errors", ("server",)),
        Command("reset_errors", "reset_errors server", "forget the server's errors", ("server",)),
        Command("get_run_number", "get_run_number", "the current run number"),
        Command(
            "restart",
            "restart client [SITES] | server | all",
            "start clients or the server again (same command line; not while a run goes on)",
            TARGETS,
            confirm=True,
        ),
        *(
            Command(name, workspace_shell.usage(name), summary, (), "participant")
            for name, summary in (
                ("pwd", "the workspace folder of the server or a site"),
                ("ls", "list a folder of that workspace (-a: hidden ones too, -l: details)"),
                ("cat", "show a file of that workspace (-n: numbered lines; up to 1 MiB)"),
                ("head", "the first lines of a file (-n LINES, default 10)"),
                ("tail", "the last lines of a file (-n LINES, default 10)"),
                ("grep", "the lines of a file that match a regular expression (-n numbered, -i any case)"),
            )
        ),
        Command(
            "download_model",
            "download_model [RUN]",
            "save a run's global model (default: the current run) in WS/admin/download/run_N/models",
        ),
        Command(
            "show_metrics",
            "show_metrics [RUN]",
            "a run's metrics per round and site, and its cross-site evaluation (default: the current run)",
        ),
        Command("watch", "watch", "live view of the running run (Ctrl-C leaves it, the run goes on)", local=True),
        Command("set_timeout", "set_timeout SECONDS", "how long commands wait for the server's reply", local=True),
        Command("lpwd", "lpwd", "the admin's transfer directory", local=True),
        Command("info", "info", "who and where this console is connected to", local=True),
        Command("help", "help [COMMAND]", "list the commands, or explain one", local=True),
        Command("bye", "bye", "leave the console", local=True),
    )
}


@dataclass
class Invocation:
    """A parsed line: the command and its request arguments (or local words)."""

    command: Command
    line: str
    args: dict[str, Any] = field(default_factory=dict)
    words: list[str] = field(default_factory=list)


def split_script(text: str) -> list[str]:
    """Commands of a `-c` string or a script file: split on ';' and newlines, '#' comments dropped."""
    lines = []
    for raw in text.replace(";", "\n").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def suggest(name: str) -> list[str]:
    """The command names closest to a mistyped one."""
    return difflib.get_close_matches(name, list(COMMANDS), n=3, cutoff=0.5)


def parse(line: str) -> Invocation:
    """Turn a typed line into an Invocation; UsageError (with the usage line) or LookupError (unknown)."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot read the line: {exc}") from exc
    if not words:
        raise UsageError("empty line")
    name, rest = words[0], words[1:]
    command = COMMANDS.get(name)
    if command is None:
        raise LookupError(name)
    parser = _PARSERS.get(name, _no_args)
    try:
        args = parser(rest)
    except (UsageError, ValueError, FlBrokerError) as exc:  # FlBrokerError: e.g. an unsafe app name
        detail = f"{exc}; " if str(exc) else ""
        raise UsageError(f"{detail}usage: {command.usage}") from exc
    return Invocation(command, line.strip(), args, rest)


def _no_args(words: list[str]) -> dict[str, Any]:
    if words:
        raise UsageError(f"unexpected {' '.join(words)!r}")
    return {}


def _one(words: list[str]) -> str:
    if len(words) != 1:
        raise UsageError("")
    return words[0]


def _run_number(words: list[str]) -> dict[str, Any]:
    word = _one(words)
    if not word.isdigit() or int(word) < 1:
        raise UsageError(f"run number must be an integer >= 1, got {word!r}")
    return {"run": int(word)}


def _sites(words: list[str]) -> list[str]:
    for site in words:
        names.check_site_name(site)  # InvalidSiteName names the bad one
    return list(words)


def _target(words: list[str], allowed: tuple[str, ...]) -> dict[str, Any]:
    if not words or words[0] not in allowed:
        raise UsageError(f"target must be {' | '.join(allowed)}")
    target, sites = words[0], words[1:]
    if sites and target != "client":
        raise UsageError(f"only 'client' takes site names, not {target!r}")
    return {"target": target, "sites": _sites(sites)} if sites else {"target": target}


def _server_only(words: list[str]) -> dict[str, Any]:
    if words not in ([], ["server"]):
        raise UsageError("")
    return {}


def _app(words: list[str]) -> dict[str, Any]:
    return {"app": _one(words)}


def _deploy(words: list[str]) -> dict[str, Any]:
    if not words:
        raise UsageError("")
    return {"app": check_app_name(words[0]), **_target(words[1:], TARGETS)}


def _site(words: list[str]) -> dict[str, Any]:
    return {"site": names.check_site_name(_one(words))}


def _help(words: list[str]) -> dict[str, Any]:
    if len(words) > 1:
        raise UsageError("")
    return {}


def _look(name: str) -> Callable[[list[str]], dict[str, Any]]:
    """The parser of a workspace command: the participant (server or a site), then words the participant
    parses again (checked here too, for an answer without a round trip)."""

    def parse_words(words: list[str]) -> dict[str, Any]:
        if not words:
            raise UsageError("name the server or a site first")
        target, rest = words[0], words[1:]
        if target != names.SERVER:
            names.check_site_name(target)
        workspace_shell.parse(name, rest)
        return {"target": target, "words": rest}

    return parse_words


def _optional_run(words: list[str]) -> dict[str, Any]:
    return _run_number(words) if words else {}


def _seconds(words: list[str]) -> dict[str, Any]:
    word = _one(words)
    try:
        seconds = float(word)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_TIMEOUT:
        raise UsageError(f"give a number of seconds above 0 and up to {MAX_TIMEOUT:g}, got {word!r}")
    return {"seconds": seconds}


_PARSERS: dict[str, Callable[[list[str]], dict[str, Any]]] = {
    **{name: _look(name) for name in workspace_shell.COMMANDS},
    "reset_errors": _server_only,
    "restart": lambda w: _target(w, TARGETS),
    "download_model": _optional_run,
    "show_metrics": _optional_run,
    "set_timeout": _seconds,
    "upload_app": _app,
    "set_run_number": _run_number,
    "delete_run_number": _run_number,
    "deploy_app": _deploy,
    "start_app": lambda w: _target(w, TARGETS),
    "check_status": lambda w: _target(w, ("server", "client")),
    "abort": lambda w: _target(w, TARGETS),
    "abort_task": _site,
    "shutdown": lambda w: _target(w, TARGETS),
    "remove_client": _site,
    "sys_info": lambda w: _target(w, ("server", "client")),
    "show_stats": _server_only,
    "show_errors": _server_only,
    "help": _help,
}


class Fetcher:
    """Sends requests to the server and turns every way they can fail into an Outcome with a clear message."""

    def __init__(self, client: RequestClient, *, timeout: float, transfer_dir: Path) -> None:
        self.client = client
        self.timeout = timeout
        self.transfer_dir = transfer_dir
        self.reconnect: Callable[[], RequestClient] | None = None  # how to replace a transport that gave up

    def call(self, command: str, args: dict[str, Any], *, timeout: float | None = None) -> Any:
        """The server's result; raises FlBrokerError subclasses (see `describe` for their messages)."""
        self.check_server_listens()
        return self.client.call(names.SERVER, command, args, timeout=timeout or self.timeout)

    def check_server_listens(self) -> None:
        """NotListening at once when nothing consumes the server's control queue, instead of a request
        that would wait out its whole timeout for an answer that cannot come."""
        try:
            listening = self.client.transport.consumer_count(names.SERVER_CONTROL_QUEUE)
        except TransportError:
            return  # cannot tell (the connection is down, or this login may not ask): the request will say
        if listening == 0:
            raise NotListening(f"nothing consumes {names.SERVER_CONTROL_QUEUE}")

    def run(self, invocation: Invocation) -> Outcome:
        """Send the request of `invocation` and collect its reply."""
        name = invocation.command.name
        outcome = Outcome(name, invocation.line)
        try:
            args = self._request_args(invocation)
            outcome.data = self.call(name, args)
        except (OSError, FlBrokerError) as exc:
            outcome.ok, outcome.error = False, self.describe(exc)
            if isinstance(exc, TransportError) and not isinstance(exc, PublishFailed):
                outcome.error += self._try_reconnect()
            return outcome
        if name == "download_model":
            try:
                outcome.data = save_model(outcome.data, self.transfer_dir.parent)
            except (OSError, FlBrokerError) as exc:
                outcome.ok, outcome.data, outcome.error = False, None, f"could not save the model: {exc}"
                return outcome
        failed = failed_sites(outcome.data)
        if failed:
            outcome.ok = False
            outcome.error = "no success from " + ", ".join(f"{s} ({e})" for s, e in failed.items())
        return outcome

    def _try_reconnect(self) -> str:
        if self.reconnect is None:
            return ""
        try:
            self.client = self.reconnect()
        except FlBrokerError as exc:
            return f"; reconnecting failed too ({exc})"
        return "; reconnected to the broker: try the command again"

    def _request_args(self, invocation: Invocation) -> dict[str, Any]:
        if invocation.command.name != "upload_app":
            return invocation.args
        folder = self.app_folder(invocation.args["app"])
        links = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_symlink()]
        if links:  # pack_app would leave them out silently; say so instead of sending a different app
            raise UnsafeArchive(f"app folder {folder} contains links ({', '.join(links[:3])}): not uploaded")
        return {"app": check_app_name(folder.name), "archive": pack_app(folder)}

    def app_folder(self, word: str) -> Path:
        """An app name in the transfer dir, or a path to an app folder."""
        staged = self.transfer_dir / word
        if "/" not in word and staged.is_dir():
            return staged
        folder = Path(word).expanduser()
        if folder.is_dir():
            return folder.resolve()
        message = f"no app folder {word!r} in {self.transfer_dir} (nor at that path)"
        nearby = Path("apps") / word
        if "/" not in word and nearby.is_dir():  # the repository's own apps, seen from a clone's root
            raise FileNotFoundError(f"{message}; did you mean: upload_app {nearby.as_posix()}")
        raise FileNotFoundError(f"{message}; copy the app folder there, or give its path")

    def describe(self, exc: BaseException) -> str:
        """One clear line for each way a request can fail."""
        if isinstance(exc, RemoteError):
            return exc.message
        if isinstance(exc, NotListening):
            return "the server is not running (no one listens on its control queue on this broker/vhost)"
        if isinstance(exc, RequestTimeout):
            return f"the server did not answer within {self.timeout:g} s (is it running?)"
        if isinstance(exc, PublishFailed):
            return f"cannot reach the server: {exc} (is it running on this broker/vhost?)"
        if isinstance(exc, TransportError):
            return f"the connection to the broker was lost ({exc})"
        if isinstance(exc, FileNotFoundError):
            return str(exc.args[0] if exc.args else exc)
        return str(exc)


def failed_sites(data: Any) -> dict[str, str]:
    """Sites whose answer in a {clients: {site: {ok, result|error}}} reply is not ok."""
    clients = data.get("clients") if isinstance(data, dict) else None
    if not isinstance(clients, dict):
        return {}
    return {s: str(a.get("error")) for s, a in clients.items() if isinstance(a, dict) and not a.get("ok")}
