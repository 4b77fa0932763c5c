"""A stopping program's guard against a broker that no longer answers.

A paused node (SIGSTOP, a suspended VM, a machine cut off the network) keeps its TCP connections open: nothing
fails until the AMQP heartbeat notices, 35-70 s later (pika checks every heartbeat + 5 s). Meanwhile the I/O
thread waits inside pika (for a cancel-ok, a publisher confirm, the close-ok), and so does every thread that
handed it an operation: a worker stopped by SIGTERM took 84 s to exit, the server 82 s (measured).

Once armed (the program is stopping: RabbitMQTransport.begin_close), the guard watches the I/O thread. When one
of its passes has lasted `grace` seconds without one byte read from or written to the socket, the broker is
taken to be gone: the transport stops reconnecting and the socket is shut down, which ends whatever pika call
waits on it (pika sees the end of the stream, as for a lost connection; the I/O thread, which owns the socket,
closes it). A broker that answers is never cut off: an idle I/O thread starts a new pass every POLL_SECONDS,
and a long send (a model-sized result) moves bytes. What the cut connection held is redelivered by the broker,
as for any lost connection."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pika

log = logging.getLogger(__name__)

GRACE_SECONDS = 1.5  # a broker that answers does so in milliseconds; a loaded machine's one within this
_SAMPLE_SECONDS = 0.1
_STARVED_SECONDS = 0.5  # a gap this long between two samples: this process was not scheduled, not the broker
_AFTER_CUT_SECONDS = 1.0  # how long close() still waits for the I/O thread once the connection is cut


class StopGuard:
    """Cuts the connection of a stopping transport whose broker stopped answering (see the module's text)."""

    def __init__(
        self,
        io_thread: threading.Thread,
        stopping: threading.Event,
        connection: Callable[[], pika.BlockingConnection | None],
        grace: float | None = None,
    ) -> None:
        self.grace = GRACE_SECONDS if grace is None else grace
        self._io = io_thread
        self._stopping = stopping  # set on a cut: the transport does not connect again
        self._connection = connection
        self._pass_began = time.monotonic()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.cut_at: float | None = None  # when the connection was cut, if it was
        self._after_cut = 0.0  # how long close() still waits for the I/O thread then
        self._left_behind = False  # close() stopped waiting for the I/O thread: nothing it was handed will run

    def tick(self) -> None:
        """(I/O thread) A new pass begins: what came before it did not wait for the broker any longer."""
        self._pass_began = time.monotonic()

    def io_alive(self) -> bool:
        """Whether the I/O thread may still run what it is handed: it runs, and close() did not leave it behind
        (a caller waiting for an operation gives up once this is False)."""
        return self._io.is_alive() and not self._left_behind

    def arm(self) -> None:
        """The program is stopping: from now on, watch the I/O thread (once; later calls do nothing)."""
        with self._lock:
            if self._thread is not None or not self._io.is_alive():
                return
            self._thread = threading.Thread(target=self._watch, name=f"{self._io.name}-stopguard", daemon=True)
            self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the I/O thread to end, and after a cut only as long as a cut socket
        takes to end pika's wait: a thread still inside pika then (e.g. connecting, with no socket to cut yet) is
        a daemon, left behind; it runs nothing more (the cut stopped it from connecting again)."""
        deadline = time.monotonic() + timeout
        while self._io.is_alive() and time.monotonic() < deadline:
            cut = self.cut_at
            if cut is not None and time.monotonic() - cut >= self._after_cut:
                log.warning("the RabbitMQ I/O thread is still waiting for the broker; leaving it behind")
                self._left_behind = True
                return
            self._io.join(timeout=min(0.05, max(0.0, deadline - time.monotonic())))

    def _watch(self) -> None:
        last = time.monotonic()
        silent_since, progress = last, _progress(self._connection())
        while self._io.is_alive():
            time.sleep(_SAMPLE_SECONDS)
            now, seen = time.monotonic(), _progress(self._connection())
            if seen != progress or now - last > _STARVED_SECONDS:
                silent_since, progress = now, seen
            last = now
            waited = now - max(silent_since, self._pass_began)
            if waited >= self.grace:
                self._cut(waited)
                return

    def _cut(self, waited: float) -> None:
        self._stopping.set()
        conn = self._connection()
        log.warning("the broker has not answered for %.1f s while this program stops; dropping the connection", waited)
        if conn is not None and shut_down(conn):
            self._after_cut = _AFTER_CUT_SECONDS
        self.cut_at = time.monotonic()


def _progress(conn: pika.BlockingConnection | None) -> tuple[int, int]:
    """Bytes read from the socket so far, and bytes written to it (marshalled less those still buffered)."""
    impl: Any = getattr(conn, "_impl", None)
    if impl is None:
        return 0, 0
    size = getattr(getattr(impl, "_transport", None), "get_write_buffer_size", None)
    unsent = int(size()) if callable(size) else 0
    return int(getattr(impl, "bytes_received", 0)), int(getattr(impl, "bytes_sent", 0)) - unsent


def connection_socket(conn: pika.BlockingConnection) -> socket.socket | None:
    """The socket under `conn` (pika's private transport; tests/transport/test_stopguard.py fails if pika drops
    it), or None if there is none (not connected yet, closed, or a pika that keeps it elsewhere)."""
    sock = getattr(getattr(getattr(conn, "_impl", None), "_transport", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def shut_down(conn: pika.BlockingConnection) -> bool:
    """Shut `conn`'s socket down from any thread: the owning thread's poll wakes and pika reads the end of the
    stream. Only shut down, never closed here: the descriptor stays the owner's, so it cannot be reused under
    it. Whether there was a socket to shut down."""
    sock = connection_socket(conn)
    if sock is None:
        log.debug("no socket to shut down under %r", conn)
        return False
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's: a TLS socket's drops its TLS state
    except OSError as exc:  # already closed by its owner, or never connected
        log.debug("shutting the broker's socket down: %r", exc)
        return False
    return True
