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


class EventStream:
    """An EventHook that queues events and publishes them in order on its own thread."""

    def __init__(self, transport: Transport, capacity: int = 10_000) -> None:
        self.transport = transport
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
            message = self._queue.get()
            if message is None:  # close() was called
                return
            key = message.routing_key()
            try:
                # Unconfirmed: waiting for each event's confirm held the server's one I/O thread, so a round's
                # task and results waited behind its events (see Publisher.send_unconfirmed). An event lost
                # with a dropped connection only leaves a gap in monitoring; the run's state is in the checkpoint.
                self.transport.publish(
                    names.EVENT_EXCHANGE, key, message.encode(), headers=message.headers(), confirm=False
                )
            except FlBrokerError as exc:  # monitoring must never stop a run
                log.warning("could not publish event %s: %s", key, exc)
