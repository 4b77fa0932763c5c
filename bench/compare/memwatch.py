"""Peak memory of a set of processes, summed, from /proc, while they run.

The set is given by root pids (their descendants count too, found afresh at every sample, so Ray's workers
started mid-run are seen) and, optionally, an environment marker that every process of the system inherits
(so a process that was re-parented to init still counts). Memory is PSS (`/proc/PID/smaps_rollup`): pages
shared between processes are split between them, so the sum is what the system really holds.

The watch also guards the machine: every process it sees is made the kernel's first choice for the OOM
killer, and when the machine's MemAvailable falls under a floor the watch trips, so the runner can stop the
system and report it as out of memory instead of letting the kernel pick another engineer's process.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

PROC = Path("/proc")


def proc_kib(path: Path, key: str) -> int | None:
    """The `key:` line of a /proc file in KiB (smaps_rollup's Pss, meminfo's MemAvailable), None if gone."""
    try:
        text = path.read_text()
    except OSError:  # the process exited, or is not ours to read
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def parents() -> dict[int, int]:
    """pid -> parent pid of every process now."""
    found: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name in parentheses may contain spaces: the fields after its last ")" are fixed
        found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def descendants(roots: Iterable[int], tree: dict[int, int]) -> set[int]:
    """`roots` that are alive, plus all their children, grandchildren ..., according to `tree`."""
    children: dict[int, list[int]] = {}
    for pid, ppid in tree.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [pid for pid in roots if pid in tree]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def marked(pids: Iterable[int], marker: bytes) -> set[int]:
    """Those of `pids` whose environment holds the entry `marker` (e.g. b"FL_COMPARE_TAG=1234")."""
    found = set()
    for pid in pids:
        try:
            environ = (PROC / str(pid) / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.add(pid)
    return found


def command_counts(pids: Iterable[int]) -> dict[str, int]:
    """How many of `pids` run each command name (/proc/PID/comm: "python", "beam.smp", "raylet" ...)."""
    counts: dict[str, int] = {}
    for pid in pids:
        try:
            name = (PROC / str(pid) / "comm").read_text().strip()
        except OSError:
            continue
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def prefer_for_oom_kill(pid: int) -> None:
    """Make `pid` the kernel OOM killer's first choice (best effort: it may be gone, or not ours)."""
    try:
        (PROC / str(pid) / "oom_score_adj").write_text("1000")
    except OSError:
        pass


class MemoryWatch:
    """Samples the summed PSS of a process set on a thread; `peak_mib` is the highest sum seen.

    `roots()` is called at every sample (the set may grow while the system starts). `tripped` is set when
    the machine's MemAvailable fell below `min_free_mib`; the owner then stops the system."""

    def __init__(
        self,
        roots: Callable[[], Iterable[int]],
        *,
        marker: str | None = None,
        interval: float = 0.5,
        min_free_mib: float = 2048,
    ) -> None:
        self.roots = roots
        self.marker = marker.encode() if marker else None
        self.interval = interval
        self.min_free_mib = min_free_mib
        self.peak_mib = 0.0
        self.peak_processes: dict[str, int] = {}  # command name -> how many, at the peak
        self.samples = 0
        self.tripped = threading.Event()
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-watch", daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Take one last sample and stop sampling."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def pids(self) -> set[int]:
        """The processes of the system right now (never this process)."""
        tree = parents()
        found = descendants(self.roots(), tree)
        if self.marker is not None:
            found |= marked(tree, self.marker)
        found.discard(os.getpid())
        return found

    def sample(self) -> float:
        """Sum the PSS of the set once; update the peak and the guard; returns the sum in MiB."""
        pids = self.pids()
        for pid in pids - self._seen:
            prefer_for_oom_kill(pid)
        self._seen |= pids
        sizes = {pid: proc_kib(PROC / str(pid) / "smaps_rollup", "Pss") for pid in pids}
        total = sum(kib for kib in sizes.values() if kib) / 1024
        self.samples += 1
        if total > self.peak_mib:
            self.peak_mib, self.peak_processes = total, command_counts(pid for pid, kib in sizes.items() if kib)
        free = proc_kib(PROC / "meminfo", "MemAvailable")
        if free is not None and free / 1024 < self.min_free_mib:
            self.tripped.set()
        return total

    def _run(self) -> None:
        while True:
            started = time.monotonic()
            self.sample()
            if self._stop.wait(max(0.0, self.interval - (time.monotonic() - started))):
                self.sample()  # the last moment counts too
                return
