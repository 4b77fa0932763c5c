"""Keep the site's broker password out of reach of the executors a worker runs.

The worker takes its settings from FL_* variables (its env file holds FL_BROKER_URL with the password) or
from its command line. Once it has read them it removes every FL_* variable from its environment, so
executors and the processes they start do not inherit them, and it blanks their values, and any URL
password on its command line, in the memory the kernel shows as /proc/self/environ and /proc/self/cmdline
(that memory is the process's initial stack: removing a variable leaves its text there).

This stops accidental leaks (child processes, environment dumps in logs or experiment trackers, readers of
/proc/PID/environ). It is no sandbox: an executor runs inside the worker's process and could still find the
password in the worker's memory. Sites that cannot trust an app's code should refuse it (workers/app_policy.py).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import urllib.parse
from collections.abc import Iterable

log = logging.getLogger(__name__)

PREFIX = "FL_"
_MEMORY = "/proc/self/mem"
_STAT = "/proc/self/stat"


def url_passwords(urls: Iterable[str]) -> list[str]:
    """The passwords in `urls`, as written (percent-encoded) and decoded."""
    found: list[str] = []
    for url in urls:
        password = urllib.parse.urlsplit(url).password
        if password:
            found += [password, urllib.parse.unquote(password)]
    return sorted(set(found), key=len, reverse=True)


def scrub_environment(passwords: Iterable[str] = ()) -> list[str]:
    """Remove every FL_* variable from the environment and blank it and `passwords` in the process's initial
    environment and argument memory, and `passwords` in sys.argv; return the names removed."""
    removed = sorted(name for name in os.environ if name.startswith(PREFIX))
    for name in removed:
        del os.environ[name]  # also unsetenv(): C code and child processes no longer see it
    secrets = [p.encode("utf-8") for p in passwords if p]
    for args in (sys.argv, getattr(sys, "orig_argv", [])):
        args[:] = [_blank_text(arg, passwords) for arg in args]
    try:
        _blank_initial_memory({name.encode("utf-8") for name in removed}, secrets)
    except OSError as exc:  # e.g. no /proc, or a kernel that refuses writes to /proc/self/mem
        log.warning("could not blank the broker password in /proc/self/environ and cmdline: %s", exc)
    return removed


def _blank_text(text: str, passwords: Iterable[str]) -> str:
    for password in passwords:
        if password:
            text = text.replace(password, "*" * len(password))
    return text


def _initial_regions() -> tuple[tuple[int, int], tuple[int, int]]:
    """(start, end) of the argument and the environment block (proc(5): fields 48-51 of /proc/self/stat)."""
    with open(_STAT, encoding="ascii") as stat_file:
        stat = stat_file.read()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name (field 2) may hold spaces
    arg_start, arg_end, env_start, env_end = (int(fields[n - 3]) for n in (48, 49, 50, 51))
    return (arg_start, arg_end), (env_start, env_end)


def _blank_initial_memory(names: set[bytes], secrets: list[bytes]) -> None:
    """Overwrite, in place, the values of the environment entries `names` and every secret in the arguments.
    Lengths stay the same, so the kernel's view of both blocks stays well formed."""
    arguments, environment = _initial_regions()
    with open(_MEMORY, "r+b", buffering=0) as memory:
        start, end = environment
        memory.seek(start)
        block = memory.read(end - start)
        offset = 0
        for entry in block.split(b"\0"):
            name, equals, value = entry.partition(b"=")
            if equals and name in names:
                _write(memory, start + offset + len(name) + 1, b"*" * len(value))
            offset += len(entry) + 1
        start, end = arguments
        memory.seek(start)
        block = memory.read(end - start)
        for secret in secrets:
            at = block.find(secret)
            while at >= 0:
                _write(memory, start + at, b"*" * len(secret))
                at = block.find(secret, at + len(secret))


def _write(memory: io.FileIO, position: int, data: bytes) -> None:
    memory.seek(position)
    memory.write(data)
