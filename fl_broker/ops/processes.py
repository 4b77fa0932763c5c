"""Finding, probing and killing local processes, for the private RabbitMQ nodes (no psutil: /proc)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any


def pids_matching(predicate: Any) -> list[int]:
    """Pids of other processes whose (cmdline, environ) bytes satisfy `predicate`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if predicate(cmd, env):
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is as good as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def kill(pid: int) -> None:
    """SIGKILL `pid` and wait (up to 2.5 s) until it is gone."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(50):
        if not alive(pid):
            return
        time.sleep(0.05)


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
