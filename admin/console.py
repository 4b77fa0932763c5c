"""The admin session: read a line, parse it, fetch the reply, render it. Interactive (readline prompt with
history and tab completion) or scripted (`-c`, `--script`: confirmations count as yes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from admin import render
from admin.commands import COMMANDS, TARGETS, Fetcher, Invocation, Outcome, UsageError, parse, suggest
from admin.watch import RunView, updates, watch
from fl_broker.errors import FlBrokerError

log = logging.getLogger(__name__)

SITE_CACHE_SECONDS = 5.0
COMPLETION_TIMEOUT = 1.5


@dataclass(frozen=True)
class Identity:
    """Who the console is connected as, and where (never the password)."""

    user: str
    where: str


class Completer:
    """Tab completion of command names, targets, site names and app names."""

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self._sites: list[str] = []
        self._sites_at = 0.0

    def candidates(self, line: str, text: str) -> list[str]:
        """Completions of the word `text` that ends `line` (the line up to the cursor)."""
        words = line.split()
        if line and not line[-1].isspace():
            words = words[:-1]  # the word being completed is `text`
        if not words:
            return sorted(n for n in COMMANDS if n.startswith(text))
        command = COMMANDS.get(words[0])
        if command is None:
            return []
        return sorted(w for w in self._options(command.name, words[1:], text) if w.startswith(text))

    def _options(self, name: str, before: list[str], text: str) -> list[str]:
        command = COMMANDS[name]
        if name == "help":
            return list(COMMANDS) if not before else []
        if name == "deploy_app":
            if not before:
                return self.apps(staged=True)
            before = before[1:]
        if command.completes == "local_app":
            return [*self.apps(staged=False), *folders(text)] if not before else []
        if command.completes == "site":
            return self.sites() if not before else []
        if command.completes == "participant":  # the workspace to look into; paths there are not completed
            return ["server", *self.sites()] if not before else []
        if not command.targets:
            return []
        if not before:
            return list(command.targets)
        return [s for s in self.sites() if s not in before] if before[0] == "client" else []

    def sites(self) -> list[str]:
        """Registered site names (from check_status, cached for a few seconds)."""
        if time.monotonic() - self._sites_at > SITE_CACHE_SECONDS:
            try:
                status = self.fetcher.call("check_status", {"target": "server"}, timeout=COMPLETION_TIMEOUT)
                self._sites = [str(row["site"]) for row in status.get("registered_clients") or []]
            except (FlBrokerError, KeyError, AttributeError):
                pass  # completion must never fail loudly; keep what we had
            self._sites_at = time.monotonic()
        return self._sites

    def apps(self, *, staged: bool) -> list[str]:
        """App folders in the local transfer dir, plus (when `staged`) the apps staged on the server."""
        folder = self.fetcher.transfer_dir
        found = {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()
        if staged:
            try:
                found.update(self.fetcher.call("list_apps", {}, timeout=COMPLETION_TIMEOUT))
            except FlBrokerError:
                pass
        return sorted(found)


def folders(text: str) -> list[str]:
    """Folders whose path starts with `text` (as typed: relative, absolute or ~), each ending in '/' so
    that the next Tab goes on inside it; nothing for an empty word (the transfer dir's apps come first)."""
    if not text:
        return []
    parent, slash, stem = text.rpartition("/")
    where, prefix = (Path(parent or "/").expanduser(), f"{parent}/") if slash else (Path("."), "")
    try:
        entries = sorted(where.iterdir())
    except OSError:
        return []
    hidden = stem.startswith(".")
    return [
        f"{prefix}{entry.name}/"
        for entry in entries
        if entry.name.startswith(stem) and (hidden or not entry.name.startswith(".")) and entry.is_dir()
    ]


class AdminConsole:
    """One admin session over a Fetcher; prints with rich, or one JSON line per command."""

    def __init__(
        self,
        fetcher: Fetcher,
        identity: Identity,
        *,
        out: Console,
        json_mode: bool = False,
        interactive: bool = True,
        ask: Callable[[str], str] = input,
    ) -> None:
        self.fetcher = fetcher
        self.identity = identity
        self.out = out
        self.json_mode = json_mode
        self.interactive = interactive
        self.ask = ask
        self.completer = Completer(fetcher)
        self.done = False
        self.failures = 0

    # ---- driving ------------------------------------------------------------------------------------

    def banner(self) -> None:
        """Who and where, and how to get help."""
        if not self.json_mode:
            where, user = escape(self.identity.where), escape(self.identity.user)
            self.out.print(f"Connected to [bold]{where}[/bold] as [bold]{user}[/bold]")
            self.out.print("Type help for the commands, bye to leave.", style="dim")

    def run_lines(self, lines: Iterable[str]) -> int:
        """Run scripted commands in order (stops at `bye`); the exit code is 1 if any command failed.
        Each output is headed by its command only when there are several, so that one `-c` command prints
        just its answer."""
        lines = list(lines)
        for line in lines:
            if self.done:
                break
            if len(lines) > 1 and not self.json_mode:
                self.out.print(Text(f"> {line}", style="bold cyan"))
            self.execute(line)
        return 1 if self.failures else 0

    def loop(self, read: Callable[[str], str] = input) -> int:
        """The interactive prompt, until `bye` or end of input. Exit code 0: a person saw each failure, and
        leaving is not one (only scripted runs report failures through the exit code)."""
        self.banner()
        while not self.done:
            try:
                line = read("> ")
            except EOFError:
                self.out.print()
                break
            except KeyboardInterrupt:
                self.out.print()
                continue
            if line.strip():
                self.execute(line)
        return 0

    def execute(self, line: str) -> Outcome | None:
        """Run one line and show its outcome; None for a line that does nothing (`bye`)."""
        try:
            outcome = self._outcome(line)
        except KeyboardInterrupt:
            outcome = Outcome(line.split()[0] if line.split() else "", line, ok=False, error="interrupted")
        except Exception as exc:  # a console bug must not end the session; the log has the traceback
            log.exception("%r failed", line)
            outcome = Outcome(line.split()[0], line, ok=False, error=f"internal error: {type(exc).__name__}: {exc}")
        if outcome is None:
            return None
        if not outcome.ok:
            self.failures += 1
        self.show(outcome)
        return outcome

    def show(self, outcome: Outcome) -> None:
        """Print an outcome in the console's output mode."""
        if self.json_mode:
            self.out.print(render.to_json(outcome), markup=False, highlight=False, soft_wrap=True)
        else:
            self.out.print(render.render(outcome))

    # ---- one command --------------------------------------------------------------------------------

    def _outcome(self, line: str) -> Outcome | None:
        try:
            invocation = parse(line)
        except LookupError as exc:
            name = str(exc.args[0])
            close = suggest(name)
            hint = f"; did you mean: {', '.join(close)}?" if close else "; type help for the commands"
            return Outcome(name, line, ok=False, error=f"unknown command {name!r}{hint}")
        except UsageError as exc:
            return Outcome(line.split()[0] if line.split() else "", line, ok=False, error=str(exc))
        if invocation.command.local:
            return self._local(invocation)
        if invocation.command.confirm and not self._confirmed(invocation):
            return Outcome(invocation.command.name, invocation.line, data="not confirmed: nothing was done")
        return self.fetcher.run(invocation)

    def _confirmed(self, invocation: Invocation) -> bool:
        if not self.interactive:
            return True
        what = " ".join(invocation.words)
        try:
            answer = self.ask(f"{invocation.command.name} {what}: are you sure? (y/N) ")
        except EOFError:
            return False
        return answer.strip().lower() in ("y", "yes")

    def _local(self, invocation: Invocation) -> Outcome | None:
        name, words = invocation.command.name, invocation.words
        outcome = Outcome(name, invocation.line)
        if name == "bye":
            self.done = True
            return None
        if name == "help":
            if words and words[0] not in COMMANDS:
                close = suggest(words[0])
                outcome.ok, outcome.error = False, f"no command {words[0]!r}; did you mean: {', '.join(close) or '-'}?"
                return outcome
            if self.json_mode:
                outcome.data = {c.name: c.usage for c in COMMANDS.values()} if not words else COMMANDS[words[0]].usage
            else:
                self.out.print(render.help_text(words[0] if words else None))
                return None
        elif name == "lpwd":
            outcome.data = str(self.fetcher.transfer_dir)
        elif name == "set_timeout":
            self.fetcher.timeout = invocation.args["seconds"]
            outcome.data = f"commands now wait up to {self.fetcher.timeout:g} s for the server's reply"
        elif name == "info":
            outcome.data = self.info()
        elif name == "watch":
            return self._watch(outcome)
        return outcome

    def info(self) -> dict[str, Any]:
        """The session's settings, for `info`."""
        return {
            "user": self.identity.user,
            "broker": self.identity.where,
            "timeout": self.fetcher.timeout,
            "transfer_dir": str(self.fetcher.transfer_dir),
            "targets": ", ".join(TARGETS),
        }

    def _watch(self, outcome: Outcome) -> Outcome:
        source = updates(self.fetcher, self.fetcher.client.transport)
        try:
            last = _last(source) if self.json_mode else watch(self.out, source)
        except KeyboardInterrupt:
            outcome.data = "left watch; the run goes on"
            return outcome
        except FlBrokerError as exc:
            outcome.ok, outcome.error = False, self.fetcher.describe(exc)
            return outcome
        if last is None or (not last.running and last.phase in ("idle", "-")):
            outcome.data = "no run is going on"
        else:
            outcome.data = f"run {last.run} {last.phase}: {last.rounds_done} / {last.num_rounds} rounds"
        return outcome


def _last(source: Iterable[RunView]) -> RunView | None:
    """Follow a watch source without drawing (JSON mode prints only the outcome)."""
    last = None
    for view in source:
        last = view
    return last


def install_readline(console: AdminConsole, history: Path) -> Callable[[], None]:
    """Hook tab completion and a history file into readline; returns the function that saves the history."""
    try:
        import readline
    except ImportError:  # e.g. Windows without pyreadline: the prompt still works, without completion
        return lambda: None

    def complete(text: str, state: int) -> str | None:
        line = readline.get_line_buffer()[: readline.get_endidx()]
        options = console.completer.candidates(line, text)
        if state >= len(options):
            return None
        return options[state] if options[state].endswith("/") else options[state] + " "  # a folder goes on

    readline.set_completer_delims(" \t;")
    readline.set_completer(complete)
    readline.parse_and_bind("tab: complete")
    try:
        readline.read_history_file(history)
    except OSError:
        pass

    def save() -> None:
        try:
            history.parent.mkdir(parents=True, exist_ok=True)
            readline.set_history_length(1000)
            readline.write_history_file(history)
        except OSError:
            pass

    return save
