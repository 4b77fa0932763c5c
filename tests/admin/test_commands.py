"""Parsing, suggestions, script splitting and tab completion (no broker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from admin.commands import COMMANDS, UsageError, parse, split_script, suggest
from admin.console import Completer
from fl_broker.errors import RequestTimeout


@pytest.mark.parametrize(
    ("line", "args"),
    [
        ("set_run_number 3", {"run": 3}),
        ("deploy_app hello-numpy-sag all", {"app": "hello-numpy-sag", "target": "all"}),
        ("deploy_app app client site-1 site-2", {"app": "app", "target": "client", "sites": ["site-1", "site-2"]}),
        ("start_app server", {"target": "server"}),
        ("check_status client site-2", {"target": "client", "sites": ["site-2"]}),
        ("shutdown client", {"target": "client"}),
        ("abort_task site-1", {"site": "site-1"}),
        ("show_stats server", {}),
        ("show_stats", {}),
        ("upload_app 'my app dir'", {"app": "my app dir"}),
    ],
)
def test_lines_become_request_arguments(line: str, args: dict[str, Any]) -> None:
    assert parse(line).args == args


@pytest.mark.parametrize(
    ("line", "usage"),
    [
        ("set_run_number 0", "set_run_number N"),
        ("set_run_number", "set_run_number N"),
        ("deploy_app x", "deploy_app APP server | client [SITES] | all"),
        ("start_app server site-1", "start_app server | client [SITES] | all"),
        ("check_status all", "check_status server | client [SITES]"),
        ("abort_task", "abort_task SITE"),
        ("abort_task server", "abort_task SITE"),
        ("shutdown client bad/site", "shutdown client [SITES] | server | all"),
        ("lpwd now", "lpwd"),
        ("upload_app 'unclosed", None),
        ("deploy_app '../up' all", "deploy_app APP server | client [SITES] | all"),
    ],
)
def test_wrong_arguments_give_the_usage(line: str, usage: str | None) -> None:
    with pytest.raises(UsageError) as raised:
        parse(line)
    if usage:
        assert str(raised.value).endswith(f"usage: {usage}")


def test_unknown_commands_and_suggestions() -> None:
    with pytest.raises(LookupError):
        parse("chek_status server")
    assert suggest("chek_status")[0] == "check_status"
    assert "deploy_app" in suggest("deploy")
    assert suggest("zzzz") == []


def test_every_command_has_usage_starting_with_its_name() -> None:
    assert all(c.usage.split()[0] == name for name, c in COMMANDS.items())


def test_scripts_split_on_semicolons_newlines_and_drop_comments() -> None:
    text = "upload_app a; set_run_number 1\n# a comment\n\ndeploy_app a all  # trailing\n"
    assert split_script(text) == ["upload_app a", "set_run_number 1", "deploy_app a all"]


class FakeFetcher:
    """Answers the two requests completion makes."""

    def __init__(self, transfer_dir: Path, *, silent: bool = False) -> None:
        self.transfer_dir = transfer_dir
        self.silent = silent
        self.calls = 0

    def call(self, command: str, args: dict[str, Any], *, timeout: float | None = None) -> Any:
        self.calls += 1
        if self.silent:
            raise RequestTimeout("no answer")
        if command == "list_apps":
            return ["staged-app"]
        return {"registered_clients": [{"site": "site-1"}, {"site": "site-2"}]}


@pytest.fixture
def completer(tmp_path: Path) -> Completer:
    (tmp_path / "local-app").mkdir()
    (tmp_path / "a-file.txt").write_text("x")
    return Completer(FakeFetcher(tmp_path))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("line", "text", "expected"),
    [
        ("", "", sorted(COMMANDS)),
        ("che", "che", ["check_status"]),
        (
            "s",
            "s",
            ["set_run_number", "set_timeout", "show_errors", "show_metrics", "show_stats", "shutdown", "start_app"]
            + ["sys_info"],
        ),
        ("cat ", "", ["server", "site-1", "site-2"]),
        ("grep site-1 ", "", []),
        ("restart ", "", ["all", "client", "server"]),
        ("start_app ", "", ["all", "client", "server"]),
        ("check_status ", "", ["client", "server"]),
        ("start_app c", "c", ["client"]),
        ("start_app client ", "", ["site-1", "site-2"]),
        ("shutdown client site-1 ", "", ["site-2"]),
        ("shutdown server ", "", []),
        ("abort_task s", "s", ["site-1", "site-2"]),
        ("upload_app ", "", ["local-app"]),
        ("deploy_app ", "", ["local-app", "staged-app"]),
        ("deploy_app staged-app ", "", ["all", "client", "server"]),
        ("help dep", "dep", ["deploy_app"]),
        ("nonsense ", "", []),
        ("lpwd ", "", []),
    ],
)
def test_completion(completer: Completer, line: str, text: str, expected: list[str]) -> None:
    assert completer.candidates(line, text) == expected


def test_upload_app_completes_folders_on_the_way_to_an_app(
    completer: Completer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "clone"  # the working directory; the transfer dir (tmp_path) holds local-app
    (here / "apps" / "hello-numpy-sag" / "config").mkdir(parents=True)
    (here / "apps" / "hello-numpy-sag" / "custom").mkdir()
    (here / "apps" / "notes.txt").write_text("not a folder")
    (here / ".hidden").mkdir()
    monkeypatch.chdir(here)
    assert completer.candidates("upload_app apps/hello-numpy-s", "apps/hello-numpy-s") == ["apps/hello-numpy-sag/"]
    assert completer.candidates("upload_app ap", "ap") == ["apps/"]
    assert completer.candidates("upload_app apps/", "apps/") == ["apps/hello-numpy-sag/"]  # folders only
    assert completer.candidates("upload_app apps/hello-numpy-sag/c", "apps/hello-numpy-sag/c") == [
        "apps/hello-numpy-sag/config/",
        "apps/hello-numpy-sag/custom/",
    ]
    assert completer.candidates("upload_app l", "l") == ["local-app"]  # the transfer dir's, by name
    assert completer.candidates("upload_app .h", ".h") == [".hidden/"]
    assert completer.candidates("upload_app nowhere/x", "nowhere/x") == []
    absolute = str(here / "apps" / "hel")
    assert completer.candidates(f"upload_app {absolute}", absolute) == [f"{absolute}lo-numpy-sag/"]


def test_completion_survives_a_silent_server_and_caches_sites(tmp_path: Path) -> None:
    silent = FakeFetcher(tmp_path, silent=True)
    assert Completer(silent).candidates("abort_task ", "") == []  # type: ignore[arg-type]
    talking = FakeFetcher(tmp_path)
    completer = Completer(talking)  # type: ignore[arg-type]
    for _ in range(3):
        completer.candidates("abort_task ", "")
    assert talking.calls == 1
