"""The life of a long-running program (server, worker): start, wait for a stop request or a signal, close."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)


def run_until_stopped(stop: threading.Event, *, start: Callable[[], None], close: Callable[[], None]) -> None:
    """Call `start`, wait until `stop` is set (by a request, SIGTERM or SIGINT), then call `close`."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        start()
        while not stop.wait(0.5):
            pass
    finally:
        close()
