"""What user components (executors, persistors) learn about the run they work in."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunContext:
    """The participant, run and folders a component works with."""

    site_name: str  # "server" on the server
    run_number: int
    run_dir: Path
    app_dir: Path


class Signal:
    """A one-way abort flag shared between the runtime and user code."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def trigger(self, reason: str = "aborted") -> None:
        """Ask the holder to stop as soon as it can."""
        self.reason = reason
        self._event.set()

    @property
    def triggered(self) -> bool:
        """Whether an abort was asked for."""
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; return True early if triggered."""
        return self._event.wait(timeout)
