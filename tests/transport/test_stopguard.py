"""StopGuard on its own: when it cuts a stopping transport's connection off (an I/O pass that waited its grace
with no byte moving) and when it does not (the I/O thread passing on, or bytes moving), with a real socket
pair under a stand-in for pika's connection. Against a real node: tests/transport/test_stopguard_rabbitmq.py
and, for programs, tests/reliability/test_sigterm_broker_gone.py."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from fl_broker.transport.rabbitmq import stopguard
from fl_broker.transport.rabbitmq.stopguard import StopGuard

GRACE = 0.3


class FakeConnection:
    """What StopGuard reads of a pika BlockingConnection: byte counts, the write buffer and the socket."""

    def __init__(self, sock: socket.socket) -> None:
        transport = SimpleNamespace(_sock=sock, get_write_buffer_size=lambda: 0)
        self._impl = SimpleNamespace(bytes_received=0, bytes_sent=0, _transport=transport)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    try:
        yield ours, theirs
    finally:
        ours.close()
        theirs.close()


def _io_thread(stop: threading.Event, each_pass: Callable[[], None] = lambda: None) -> threading.Thread:
    """A stand-in for the I/O thread: runs `each_pass` every 0.05 s until `stop` is set."""

    def run() -> None:
        while not stop.wait(0.05):
            each_pass()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _guarded(conn: Any, io: threading.Thread, stopping: threading.Event) -> StopGuard:
    guard = StopGuard(io, stopping, lambda: conn, grace=GRACE)
    guard.arm()
    return guard


def test_a_pass_that_waits_out_its_grace_in_silence_has_its_socket_shut_down(pair):
    ours, theirs = pair
    stopping, io_done = threading.Event(), threading.Event()
    io = _io_thread(io_done)  # never ticks: one pass, waiting
    began = time.monotonic()
    guard = _guarded(FakeConnection(ours), io, stopping)
    try:
        while guard.cut_at is None and time.monotonic() - began < 5:
            time.sleep(0.01)
        assert guard.cut_at is not None, "the guard never cut the connection"
        assert GRACE <= guard.cut_at - began < GRACE + 1.0
        assert stopping.is_set()  # before the socket went: the transport does not connect again
        theirs.settimeout(2)
        assert theirs.recv(10) == b""  # the other end sees the stream end, as pika's poll does on ours
    finally:
        io_done.set()


@pytest.mark.parametrize("alive", ["ticking", "moving bytes"])
def test_an_io_thread_that_passes_on_or_moves_bytes_is_never_cut(pair, alive):
    ours, _theirs = pair
    stopping, io_done = threading.Event(), threading.Event()
    conn = FakeConnection(ours)
    guard: StopGuard | None = None

    def each_pass() -> None:
        if alive == "ticking" and guard is not None:
            guard.tick()  # an idle I/O thread: a new pass every POLL_SECONDS
        else:
            conn._impl.bytes_sent += 65536  # one long send (a model-sized result) on a socket that takes it

    io = _io_thread(io_done, each_pass)
    guard = _guarded(conn, io, stopping)
    try:
        assert not stopping.wait(GRACE * 4)
        assert guard.cut_at is None
    finally:
        io_done.set()
        io.join()


def test_close_waits_for_the_io_thread_but_not_past_a_cut(pair):
    ours, _theirs = pair
    stopping, io_done = threading.Event(), threading.Event()
    io = _io_thread(io_done)  # stays inside pika after the cut, as one stuck connecting would
    guard = _guarded(FakeConnection(ours), io, stopping)
    try:
        began = time.monotonic()
        guard.join(timeout=10)
        took = time.monotonic() - began
        assert io.is_alive() and not guard.io_alive()  # left behind: callers waiting on it give up
        # the grace, then the time a cut socket takes to end pika's wait; never the 10 s
        assert GRACE <= took < GRACE + stopguard._AFTER_CUT_SECONDS + 1.0
    finally:
        io_done.set()


def test_without_a_socket_to_cut_close_stops_waiting_at_the_cut():
    stopping, io_done = threading.Event(), threading.Event()
    io = _io_thread(io_done)  # connecting: no connection yet
    guard = _guarded(None, io, stopping)
    try:
        began = time.monotonic()
        guard.join(timeout=10)
        assert time.monotonic() - began < GRACE + 0.8
        assert stopping.is_set()  # and the transport does not connect again
    finally:
        io_done.set()


def test_an_io_thread_that_ended_is_joined_at_once_and_never_watched():
    stopping = threading.Event()
    ended = threading.Thread(target=lambda: None)
    ended.start()
    ended.join()
    guard = StopGuard(ended, stopping, lambda: None, grace=GRACE)
    guard.arm()
    began = time.monotonic()
    guard.join(timeout=10)
    assert time.monotonic() - began < 0.2
    assert not stopping.wait(GRACE * 2)
