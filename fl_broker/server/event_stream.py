"""Publishes lifecycle events to fl.event (as `protocol.events.EventMessage`s) from a background thread, so
monitoring never slows a round."""

from __future__ import annotations

import logging
import queue
import threading
import time

from fl_broker.errors import FlBrokerError
from fl_broker.fl.events import Event
from fl_broker.protocol.events import EventMessage
from fl_broker.transport import Transport
from fl_broker.wire import names

log = logging.getLogger(__name__)

# How long the publishing thread lets a burst of events queue up after its first one. A round fires its
# events in a few bursts (a result's two, then before_aggregation .. before_learnable_persist ...); each
# burst handed over together costs the transport's I/O thread one pass and the broker one socket read, not
# one per event. Measured on a 3x3 round with 2 sites (bench/bench_breakdown.py, 4 pairs of runs): server
# CPU 5.6-7.1 -> 5.0-5.9 ms, broker 2.9-3.2 -> 2.4-2.6 ms per round. Monitoring sees each event that much later.
GATHER_SECONDS = 0.002


class EventStream:
    """An EventHook that queues events and publishes them in order on its own thread."""

    def __init__(self, transport: Transport, capacity: int = 10_000, gather: float = GATHER_SECONDS) -> None:
        self.transport = transport
        self.gather = gather
        self._queue: queue.Queue[EventMessage | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="event-stream", daemon=True)
        self._thread.start()

    def __call__(self, event: Event) -> None:
        message = EventMessage(event.run, event.type, event.round, event.data, time.time())
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            log.warning("event stream is backed up; dropping %s", event.type)

    def close(self, timeout: float = 10.0) -> None:
        """Publish what is queued (up to `timeout` seconds), then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            burst = self._take_burst()
            with self.transport.batch():  # one hand-over to the I/O thread for the whole burst
                for message in burst:
                    if message is None:  # close() was called
                        return
                    self._publish(message)

    def _take_burst(self) -> list[EventMessage | None]:
        """The next event (waiting for one), then, `gather` seconds later, every other one queued, in order."""
        burst = [self._queue.get()]
        if burst[0] is not None and self.gather > 0:
            time.sleep(self.gather)
        while burst[-1] is not None:
            try:
                burst.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return burst

    def _publish(self, message: EventMessage) -> None:
        key = message.routing_key()
        try:
            # Unconfirmed: waiting for each event's confirm held the server's one I/O thread, so a round's task
            # and results waited behind its events (see Publisher.send_unconfirmed). An event lost with a
            # dropped connection only leaves a gap in monitoring; the run's state is in the checkpoint.
            self.transport.publish(
                names.EVENT_EXCHANGE, key, message.encode(), headers=message.headers(), confirm=False
            )
        except FlBrokerError as exc:  # monitoring must never stop a run
            log.warning("could not publish event %s: %s", key, exc)
