"""fl_broker.apps.workspace_shell: read-only pwd/ls/cat/head/tail/grep confined to one workspace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fl_broker.apps import workspace_shell as shell
from fl_broker.apps.workspace_shell import run
from fl_broker.errors import UsageError, WorkspaceRefused


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A site workspace next to a secret that must stay out of reach."""
    home = tmp_path / "ws" / "site-1"
    (home / "run_1" / "model").mkdir(parents=True)
    (home / "log.txt").write_text("".join(f"line {i} {'ERROR' if i % 10 == 0 else 'ok'}\n" for i in range(1, 101)))
    (home / ".history").write_text("hidden\n")
    (home / "run_1" / "model" / "best_numpy.npy").write_bytes(b"\x93NUMPY\x00\xff")
    (tmp_path / "secret.txt").write_text("the password\n")
    (tmp_path / "ws" / "site-2").mkdir()
    (tmp_path / "ws" / "site-2" / "log.txt").write_text("another site's log\n")
    return home


def test_pwd_and_ls(root: Path) -> None:
    assert run(root, "pwd", []) == str(root.resolve())
    assert run(root, "ls", []).splitlines() == ["log.txt", "run_1/"]
    assert run(root, "ls", ["-a"]).splitlines() == [".history", "log.txt", "run_1/"]
    assert run(root, "ls", ["run_1/model"]) == "best_numpy.npy"
    assert run(root, "ls", ["log.txt"]) == "log.txt"
    long = run(root, "ls", ["-l", "run_1/model"])
    assert long.startswith("-rw") and long.endswith(" best_numpy.npy") and " 8 " in long
    assert run(root, "ls", ["-la"]).splitlines()[0].endswith(".history")


def test_cat_head_tail_grep(root: Path) -> None:
    text = run(root, "cat", ["log.txt"]).splitlines()
    assert len(text) == 100 and text[0] == "line 1 ok" and text[-1] == "line 100 ERROR"
    assert run(root, "cat", ["-n", "log.txt"]).splitlines()[1] == "     2  line 2 ok"
    assert run(root, "head", ["log.txt"]).splitlines() == [f"line {i} ok" for i in range(1, 10)] + ["line 10 ERROR"]
    assert run(root, "head", ["-n", "2", "log.txt"]) == "line 1 ok\nline 2 ok"
    assert run(root, "tail", ["-n", "3", "log.txt"]) == "line 98 ok\nline 99 ok\nline 100 ERROR"
    assert run(root, "tail", ["-n", "500", "log.txt"]).splitlines()[0] == "line 1 ok"  # fewer lines than asked
    assert run(root, "grep", ["ERROR", "log.txt"]).splitlines()[:2] == ["line 10 ERROR", "line 20 ERROR"]
    assert run(root, "grep", ["-n", "-i", "error$", "log.txt"]).splitlines()[-1] == "100:line 100 ERROR"
    assert run(root, "grep", ["nothing", "log.txt"]) == ""
    assert run(root, "cat", ["run_1/model/best_numpy.npy"]).startswith("\ufffdNUMPY")  # bytes shown, not a crash


@pytest.mark.parametrize(
    "path",
    ["../site-2/log.txt", "../../secret.txt", "/etc/passwd", "run_1/../../secret.txt", "..", "/"],
)
def test_paths_that_leave_the_workspace_are_refused(root: Path, path: str) -> None:
    for command in ("ls", "cat", "head", "tail"):
        with pytest.raises(WorkspaceRefused, match="leaves the workspace"):
            run(root, command, [path])


def test_a_link_out_of_the_workspace_is_refused(root: Path) -> None:
    (root / "innocent.txt").symlink_to(root.parent.parent / "secret.txt")
    (root / "elsewhere").symlink_to(root.parent / "site-2")
    (root / "fine.txt").symlink_to(root / "log.txt")  # a link that stays inside is followed
    for words in (["innocent.txt"], ["elsewhere/log.txt"]):
        with pytest.raises(WorkspaceRefused, match="is a link to outside the workspace"):
            run(root, "cat", words)
    with pytest.raises(WorkspaceRefused, match="link to outside"):
        run(root, "ls", ["elsewhere"])
    assert "innocent.txt@" in run(root, "ls", []).splitlines()  # listed, never followed
    assert run(root, "head", ["-n", "1", "fine.txt"]) == "line 1 ok"


def test_huge_files_and_special_files_are_refused_or_bounded(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = root / "big.log"
    with big.open("w") as handle:
        for i in range(200_000):
            handle.write(f"row {i}\n")
    assert big.stat().st_size > shell.MAX_CAT_BYTES
    with pytest.raises(WorkspaceRefused, match=r"refused: big.log is 2\.\d MiB; cat shows files up to 1\.0 MiB"):
        run(root, "cat", ["big.log"])
    assert run(root, "tail", ["-n", "2", "big.log"]) == "row 199998\nrow 199999"
    assert run(root, "head", ["-n", "1", "big.log"]) == "row 0"
    found = run(root, "grep", ["row", "big.log"]).splitlines()
    assert len(found) == shell.MAX_LINES + 1 and found[-1] == f"... (cut at {shell.MAX_LINES} lines)"
    monkeypatch.setattr(shell, "MAX_GREP_BYTES", 1000)
    with pytest.raises(WorkspaceRefused, match="grep reads files up to 1000 bytes"):
        run(root, "grep", ["row", "big.log"])
    (root / "one-line.bin").write_text("x" * (shell.MAX_LINE_CHARS * 3))
    (shown,) = run(root, "head", ["one-line.bin"]).splitlines()
    assert shown == "x" * shell.MAX_LINE_CHARS + " ... (line cut)"
    (tail,) = run(root, "tail", ["one-line.bin"]).splitlines()
    assert tail.endswith(" ... (line cut)") and len(tail) < shell.MAX_LINE_CHARS + 20
    os.mkfifo(root / "pipe")
    with pytest.raises(WorkspaceRefused, match="pipe is not a regular file"):
        run(root, "cat", ["pipe"])  # would block for ever if opened


def test_missing_files_and_folders(root: Path) -> None:
    with pytest.raises(WorkspaceRefused, match="nope.txt: no such file or folder in the workspace"):
        run(root, "cat", ["nope.txt"])
    with pytest.raises(WorkspaceRefused, match="run_1 is a folder"):
        run(root, "cat", ["run_1"])


@pytest.mark.parametrize(
    ("command", "words", "message"),
    [
        ("pwd", ["x"], "unexpected 'x'; usage: pwd server | SITE"),
        ("ls", ["-z"], "unknown option -z; usage: ls server | SITE [-a] [-l] [PATH]"),
        ("ls", ["a", "b"], "one PATH at most"),
        ("cat", [], "give one FILE; usage: cat server | SITE [-n] FILE"),
        ("head", ["-n", "0", "log.txt"], "-n takes a number of lines from 1 to 5000, got '0'"),
        ("tail", ["-n"], "-n needs a value"),
        ("grep", ["x"], "give a PATTERN and one FILE"),
        ("grep", ["(", "log.txt"], "bad pattern '('"),
        ("rm", ["log.txt"], "unknown workspace command 'rm'"),
    ],
)
def test_usage_errors(root: Path, command: str, words: list[str], message: str) -> None:
    with pytest.raises(UsageError) as error:
        run(root, command, words)
    assert message in str(error.value)
