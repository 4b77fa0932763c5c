"""The operations other threads hand to the RabbitMQ transport's I/O thread, and how the I/O thread runs them.

Operations run in the order they were handed over. One interrupted by a lost connection goes back to the
front (if it may be retried) and runs again on the next connection, before anything handed over after it."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from queue import SimpleQueue

import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingChannel

from fl_broker.errors import ConnectionLost, QueueTypeMismatch, TransportError
from fl_broker.transport.rabbitmq import amqp

log = logging.getLogger(__name__)


class OpQueue:
    """Handed-over operations (any thread puts; only the I/O thread runs or fails them)."""

    def __init__(self) -> None:
        self._inbox: SimpleQueue[amqp.Op] = SimpleQueue()
        self._pending: deque[amqp.Op] = deque()  # taken from the inbox, not yet run (e.g. while disconnected)
        self._batching = threading.local()  # .wake: inside batch(), whether an op put awaits its wake-up

    def put(self, op: amqp.Op) -> bool:
        """Hand `op` to the I/O thread; whether the caller must wake it now (not inside this thread's batch(),
        which wakes it once when the block ends)."""
        self._inbox.put(op)
        if getattr(self._batching, "wake", None) is None:
            return True
        self._batching.wake = True
        return False

    @contextlib.contextmanager
    def batch(self, wake: Callable[[], None]) -> Iterator[None]:
        """Operations this thread puts inside call `wake` once, at the end, not one each; nested blocks leave
        the wake to the outermost."""
        if getattr(self._batching, "wake", None) is not None:
            yield
            return
        self._batching.wake = False
        try:
            yield
        finally:
            woken, self._batching.wake = self._batching.wake, None
            if woken:
                wake()

    def empty(self) -> bool:
        """Whether nothing is left to run."""
        return self._inbox.empty() and not self._pending

    def run(self, channel: Callable[[], BlockingChannel | None], reopen_channel: Callable[[], None]) -> None:
        """(I/O thread) Run every operation on the channel `channel()` gives at its turn (one the broker refused
        has the channel reopened, and the next runs on the new one), finishing each with its result or its
        translated error; a connection error is raised after its operation was put back or failed."""
        while not self._inbox.empty():
            self._pending.append(self._inbox.get())
        while self._pending:
            op = self._pending.popleft()
            if not op.take():
                continue
            try:
                result = op.fn(channel())
            except amqp.CONNECTION_ERRORS:
                if op.requeue():
                    self._pending.appendleft(op)
                else:
                    op.finish(error=ConnectionLost("connection lost during the operation"))
                raise
            except pe.ChannelClosedByBroker as exc:
                op.finish(error=amqp.translate_channel_error(exc, op.error_type))
                log.warning("broker closed the channel: %s; reopening it", exc)
                reopen_channel()
            except QueueTypeMismatch as exc:  # the broker's 406 closed the channel
                op.finish(error=exc)
                reopen_channel()
            except BaseException as exc:
                op.finish(error=amqp.translate(exc))
            else:
                op.finish(result)

    def fail_all(self, error: TransportError) -> None:
        """(I/O thread, at shutdown) Finish every operation not yet run with `error`."""
        ops = list(self._pending)
        self._pending.clear()
        while not self._inbox.empty():
            ops.append(self._inbox.get())
        for op in ops:
            if op.take():
                op.finish(error=error)
