"""The server's run state (run number, deployed app, engine status, the sites of the run, errors) and its
persistence in engine.json, so that a restarted server picks up where it stopped."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

log = logging.getLogger(__name__)

MAX_ERRORS_SHOWN = 50


class EngineStatus(str, Enum):
    """The server app's life cycle, as check_status reports it."""

    STOPPED = "stopped"
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"


@dataclass(frozen=True)
class SavedState:
    """What engine.json holds."""

    run_number: int | None
    app_name: str | None
    running: bool
    run_sites: frozenset[str]


class EngineState:
    """The mutable state every part of the server shares. Take `lock` for any check-then-change of it; the
    lock is re-entrant so a part may save while holding it."""

    def __init__(self, state_file: Path, *, before_save: Callable[[], None] = lambda: None) -> None:
        self.lock = threading.RLock()
        self._before_save = before_save  # e.g. the standby fencing check: a replaced server must not write
        self.run_number: int | None = None
        self.app_name: str | None = None  # deployed to the server for run_number
        self.status = EngineStatus.STOPPED
        self.run_sites: set[str] = set()  # sites that started the client app of the current run
        # Only the last ones shown are kept (a site sending bad results for days must not grow the server),
        # with the count of all of them
        self._errors: deque[str] = deque(maxlen=MAX_ERRORS_SHOWN)
        self._error_total = 0
        self._file = state_file

    @property
    def running(self) -> bool:
        """Whether the server app is starting or started."""
        with self.lock:
            return self.status in (EngineStatus.STARTING, EngineStatus.STARTED)

    def add_error(self, message: str) -> None:
        """Keep an error for show_errors."""
        with self.lock:
            self._errors.append(message)
            self._error_total += 1

    def errors(self) -> list[str]:
        """The most recent errors, oldest first."""
        with self.lock:
            return list(self._errors)

    def reset_errors(self) -> int:
        """Forget the errors kept so far; how many there were."""
        with self.lock:
            count, self._error_total = self._error_total, 0
            self._errors.clear()
            return count

    def error_count(self) -> int:
        """How many errors there were since the server started (or the last reset_errors)."""
        with self.lock:
            return self._error_total

    def save(self) -> None:
        """Write engine.json atomically."""
        self._before_save()
        with self.lock:
            state = {
                "run_number": self.run_number,
                "app_name": self.app_name,
                "running": self.running,
                "run_sites": sorted(self.run_sites),
            }
            # written under the lock too: a slower thread must not replace a newer snapshot with its own
            tmp = self._file.with_suffix(".tmp")
            tmp.write_text(json.dumps(state), encoding="utf-8")
            os.replace(tmp, self._file)

    def restore(self) -> SavedState | None:
        """Take the run number, app and run sites from engine.json; what it held, or None if nothing
        (readable) was saved. The status stays stopped: resuming a run is the run control's job."""
        saved = self._read()
        if saved is not None:
            with self.lock:
                self.run_number, self.app_name = saved.run_number, saved.app_name
                self.run_sites = set(saved.run_sites)
        return saved

    def _read(self) -> SavedState | None:
        try:
            state = json.loads(self._file.read_text(encoding="utf-8"))
            return SavedState(
                run_number=state.get("run_number"),
                app_name=state.get("app_name"),
                running=bool(state.get("running")),
                run_sites=frozenset(state.get("run_sites") or []),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            log.warning("ignoring unreadable %s: %s", self._file, exc)
            return None
