"""What user components (executors, persistors) learn about the run they work in."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunContext:
    """The participant, run and folders a component works with."""

    site_name: str  # "server" on the server
    run_number: int
    run_dir: Path
    app_dir: Path
    # The round the workflow starts (or resumes) at, decided before the persistor is asked for a model: FLARE's
    # persistors read their saved model only when it is > 0.
    start_round: int = 0


class Signal:
    """A one-way abort flag shared between the runtime and user code."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.trigger_time: float | None = None

    def trigger(self, reason: str = "aborted") -> None:
        """Ask the holder to stop as soon as it can."""
        self.reason = reason
        self.trigger_time = time.time()
        self._event.set()

    def reset(self, value: str = "") -> None:
        """Clear the flag again (FLARE's Signal.reset)."""
        self._event.clear()
        self.reason = value
        self.trigger_time = None

    @property
    def value(self) -> str:
        """FLARE's name for the reason given to trigger()."""
        return self.reason

    @property
    def triggered(self) -> bool:
        """Whether an abort was asked for."""
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; return True early if triggered."""
        return self._event.wait(timeout)
