"""Read-only looks into one participant's workspace, for the admin's `pwd`, `ls`, `cat`, `head`, `tail` and
`grep` (FLARE 2.0's shell commands). Used by the server for its own workspace and by each worker for its
site's; both parse the words here, so the rules are the same everywhere.

Every path is taken relative to the workspace root and must stay inside it: a path that leaves it
(`../x`, an absolute path elsewhere) or that reaches outside through a symbolic link is refused, and so is
anything but a regular file or folder (a FIFO would block the reader). Output is bounded: `cat` refuses
files over MAX_CAT_BYTES, `head`/`tail` read only what they show, `grep` refuses files over
MAX_GREP_BYTES, lines are cut at MAX_LINE_CHARS, and every answer stops at MAX_LINES lines or
MAX_OUTPUT_BYTES characters.
"""

from __future__ import annotations

import itertools
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fl_broker.errors import UsageError, WorkspaceRefused

COMMANDS = ("pwd", "ls", "cat", "head", "tail", "grep")
USAGE = {
    "pwd": "pwd",
    "ls": "ls [-a] [-l] [PATH]",
    "cat": "cat [-n] FILE",
    "head": "head [-n LINES] FILE",
    "tail": "tail [-n LINES] FILE",
    "grep": "grep [-n] [-i] PATTERN FILE",
}
MAX_CAT_BYTES = 1024 * 1024
MAX_GREP_BYTES = 256 * 1024 * 1024
MAX_LINES = 5000  # lines in any one answer (head/tail -n is capped at it too)
MAX_OUTPUT_BYTES = 1024 * 1024  # characters in any one answer
MAX_LINE_CHARS = 16 * 1024  # a longer line is shown cut, so one huge line cannot fill the memory
_BLOCK = 64 * 1024


@dataclass(frozen=True)
class ShellRequest:
    """A parsed command: what to run, on which path, with which options."""

    command: str
    path: str = "."
    flags: frozenset[str] = frozenset()
    lines: int = 10
    pattern: str = ""


def usage(command: str) -> str:
    """The usage line of `command` as the admin types it (the target first)."""
    return f"{command} server | SITE {USAGE[command].partition(' ')[2]}".rstrip()


def parse(command: str, words: list[str]) -> ShellRequest:
    """The request `words` (the arguments after the command) make; UsageError saying what is wrong if not."""
    if command not in COMMANDS:
        raise UsageError(f"unknown workspace command {command!r}")
    return _PARSERS[command](command, list(words))


def _options(words: list[str], allowed: str, *, with_value: str = "") -> tuple[set[str], dict[str, str], list[str]]:
    """Split leading -x options (single letters of `allowed`; `with_value` ones take the next word)."""
    flags: set[str] = set()
    values: dict[str, str] = {}
    while words and words[0].startswith("-") and words[0] != "-":
        word = words.pop(0)
        if word == "--":
            break
        for letter in word[1:]:
            if letter in with_value:
                if not words:
                    raise UsageError(f"-{letter} needs a value")
                values[letter] = words.pop(0)
            elif letter in allowed:
                flags.add(letter)
            else:
                raise UsageError(f"unknown option -{letter}")
    return flags, values, words


def _parse_pwd(command: str, words: list[str]) -> ShellRequest:
    if words:
        raise UsageError(f"unexpected {' '.join(words)!r}")
    return ShellRequest(command)


def _parse_ls(command: str, words: list[str]) -> ShellRequest:
    flags, _, rest = _options(words, "al")
    if len(rest) > 1:
        raise UsageError("one PATH at most")
    return ShellRequest(command, rest[0] if rest else ".", frozenset(flags))


def _parse_cat(command: str, words: list[str]) -> ShellRequest:
    flags, _, rest = _options(words, "n")
    return ShellRequest(command, _one_file(rest), frozenset(flags))


def _parse_head_tail(command: str, words: list[str]) -> ShellRequest:
    _, values, rest = _options(words, "", with_value="n")
    count = values.get("n", "10")
    if not count.isdigit() or not 0 < int(count) <= MAX_LINES:
        raise UsageError(f"-n takes a number of lines from 1 to {MAX_LINES}, got {count!r}")
    return ShellRequest(command, _one_file(rest), lines=int(count))


def _parse_grep(command: str, words: list[str]) -> ShellRequest:
    flags, _, rest = _options(words, "ni")
    if len(rest) != 2:
        raise UsageError("give a PATTERN and one FILE")
    try:
        re.compile(rest[0])
    except re.error as exc:
        raise UsageError(f"bad pattern {rest[0]!r}: {exc}") from exc
    return ShellRequest(command, rest[1], frozenset(flags), pattern=rest[0])


def _one_file(words: list[str]) -> str:
    if len(words) != 1:
        raise UsageError("give one FILE")
    return words[0]


_PARSERS: dict[str, Callable[[str, list[str]], ShellRequest]] = {
    "pwd": _parse_pwd,
    "ls": _parse_ls,
    "cat": _parse_cat,
    "head": _parse_head_tail,
    "tail": _parse_head_tail,
    "grep": _parse_grep,
}


# ---- running -------------------------------------------------------------------------------------------


def run(root: Path, command: str, words: list[str]) -> str:
    """Parse and run one workspace command in `root`; its output. UsageError (with the usage line) or
    WorkspaceRefused if not."""
    try:
        request = parse(command, words)
    except UsageError as exc:
        raise UsageError(f"{exc}; usage: {usage(command)}" if command in COMMANDS else str(exc)) from exc
    return _RUNNERS[request.command](root.resolve(), request)


def resolve(root: Path, path: str) -> Path:
    """`path` (relative to `root`) as a real path inside `root`; WorkspaceRefused if it leaves it."""
    if not path or "\0" in path:
        raise WorkspaceRefused(f"refused: {path!r} is not a path")
    real_root = root.resolve()
    lexical = Path(os.path.normpath(real_root / path))
    if not _inside(lexical, real_root):
        raise WorkspaceRefused(f"refused: {path} leaves the workspace; give a path inside it, relative to it")
    real = Path(os.path.realpath(lexical))
    if not _inside(real, real_root):
        raise WorkspaceRefused(f"refused: {path} is a link to outside the workspace")
    return real


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _existing(root: Path, path: str, *, folder_ok: bool) -> tuple[Path, os.stat_result]:
    real = resolve(root, path)
    try:
        info = real.stat()
    except FileNotFoundError:
        raise WorkspaceRefused(f"{path}: no such file or folder in the workspace") from None
    except OSError as exc:
        raise WorkspaceRefused(f"{path}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode) and not folder_ok:
        raise WorkspaceRefused(f"{path} is a folder (ls lists it)")
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise WorkspaceRefused(f"refused: {path} is not a regular file")
    return real, info


def _pwd(root: Path, request: ShellRequest) -> str:
    return str(root)


def _ls(root: Path, request: ShellRequest) -> str:
    real, info = _existing(root, request.path, folder_ok=True)
    if not stat.S_ISDIR(info.st_mode):
        return _ls_line(real.name, real, request) if "l" in request.flags else real.name
    try:
        entries = sorted(os.scandir(real), key=lambda e: e.name)
    except OSError as exc:
        raise WorkspaceRefused(f"{request.path}: {exc.strerror}") from None
    shown = [e for e in entries if "a" in request.flags or not e.name.startswith(".")]
    lines = [_ls_line(e.name, Path(e.path), request) if "l" in request.flags else _marked(e) for e in shown]
    return _bounded(iter(lines))


def _marked(entry: os.DirEntry[str]) -> str:
    """A name as ls -F shows it: folders end in '/', links in '@' (never followed, not even to tell)."""
    if entry.is_symlink():
        return entry.name + "@"
    return entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name


def _ls_line(name: str, path: Path, request: ShellRequest) -> str:
    info = path.lstat()
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.st_mtime))
    kind = "/" if stat.S_ISDIR(info.st_mode) else "@" if stat.S_ISLNK(info.st_mode) else ""
    return f"{stat.filemode(info.st_mode)} {info.st_size:>12} {when} {name}{kind}"


def _cat(root: Path, request: ShellRequest) -> str:
    real, info = _existing(root, request.path, folder_ok=False)
    if info.st_size > MAX_CAT_BYTES:
        raise WorkspaceRefused(
            f"refused: {request.path} is {_size(info.st_size)}; cat shows files up to {_size(MAX_CAT_BYTES)} "
            "(head, tail and grep read larger ones)"
        )
    lines = _read_lines(real)
    if "n" in request.flags:
        lines = (f"{number:6}  {line}" for number, line in enumerate(lines, 1))
    return _bounded(lines)


def _head(root: Path, request: ShellRequest) -> str:
    real, _ = _existing(root, request.path, folder_ok=False)
    return _bounded(itertools.islice(_read_lines(real), request.lines))


def _tail(root: Path, request: ShellRequest) -> str:
    real, info = _existing(root, request.path, folder_ok=False)
    with open(real, "rb") as handle:  # read backwards in blocks until enough lines are in hand
        position, data = info.st_size, b""
        while position > 0 and data.count(b"\n") <= request.lines and len(data) < MAX_OUTPUT_BYTES:
            step = min(_BLOCK, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines()
    if position > 0 and lines:
        lines = lines[1:]  # the first one may have started before what was read
    return _bounded(_cut(line) for line in lines[-request.lines :])


def _grep(root: Path, request: ShellRequest) -> str:
    real, info = _existing(root, request.path, folder_ok=False)
    if info.st_size > MAX_GREP_BYTES:
        limit = _size(MAX_GREP_BYTES)
        raise WorkspaceRefused(f"refused: {request.path} is {_size(info.st_size)}; grep reads files up to {limit}")
    pattern = re.compile(request.pattern, re.IGNORECASE if "i" in request.flags else 0)
    numbered = "n" in request.flags
    found = (
        f"{number}:{line}" if numbered else line
        for number, line in enumerate(_read_lines(real), 1)
        if pattern.search(line)
    )
    return _bounded(found)


_RUNNERS: dict[str, Callable[[Path, ShellRequest], str]] = {
    "pwd": _pwd,
    "ls": _ls,
    "cat": _cat,
    "head": _head,
    "tail": _tail,
    "grep": _grep,
}


def _read_lines(path: Path) -> Iterator[str]:
    """The file's lines (undecodable bytes replaced), each cut at MAX_LINE_CHARS without reading the rest."""
    with open(path, encoding="utf-8", errors="replace", newline=None) as handle:
        while piece := handle.readline(MAX_LINE_CHARS):
            if piece.endswith("\n"):
                yield piece[:-1]
            elif len(piece) < MAX_LINE_CHARS:
                yield piece  # the last line, without a newline
            else:
                yield piece + " ... (line cut)"
                while piece and not piece.endswith("\n"):  # skip the rest of that line
                    piece = handle.readline(MAX_LINE_CHARS)


def _cut(line: str) -> str:
    return line[:MAX_LINE_CHARS] + " ... (line cut)" if len(line) > MAX_LINE_CHARS else line


def _bounded(lines: Iterator[str]) -> str:
    kept: list[str] = []
    size = 0
    for line in lines:
        if len(kept) == MAX_LINES or size + len(line) > MAX_OUTPUT_BYTES:
            kept.append(f"... (cut at {len(kept)} lines)")
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept)


def _size(count: int) -> str:
    return f"{count / (1024 * 1024):.1f} MiB" if count >= 1024 * 1024 else f"{count} bytes"
