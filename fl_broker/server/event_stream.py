"""Publishes lifecycle events to fl.event from a background thread, so monitoring never slows a round."""

from __future__ import annotations

import logging
import queue
import threading
import time

from fl_broker.errors import FlBrokerError
from fl_broker.fl.events import Event
from fl_broker.transport import Transport
from fl_broker.wire import names
from fl_broker.wire.envelope import Envelope, encode_envelope

log = logging.getLogger(__name__)

_SHORT_NAMES = {"round_started": "started", "round_done": "done"}


def event_routing_key(event: Event) -> str:
    """run.N.round.R.started / run.N.round.R.done / run.N.round.R.<type> / run.N.<type>."""
    parts: list[object] = ["round", event.round] if event.round is not None else []
    return names.event_key(event.run, *parts, _SHORT_NAMES.get(event.type, event.type))


class EventStream:
    """An EventHook that queues events and publishes them in order on its own thread."""

    def __init__(self, transport: Transport, capacity: int = 10_000) -> None:
        self.transport = transport
        self._queue: queue.Queue[tuple[str, Envelope] | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="event-stream", daemon=True)
        self._thread.start()

    def __call__(self, event: Event) -> None:
        fields = {"type": event.type, "round": event.round, "data": event.data, "time": time.time()}
        try:
            self._queue.put_nowait((event_routing_key(event), Envelope("event", event.run, fields)))
        except queue.Full:
            log.warning("event stream is backed up; dropping %s", event.type)

    def close(self, timeout: float = 10.0) -> None:
        """Publish what is queued (up to `timeout` seconds), then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:  # close() was called
                return
            key, envelope = item
            try:
                self.transport.publish(names.EVENT_EXCHANGE, key, encode_envelope(envelope))
            except FlBrokerError as exc:  # monitoring must never stop a run
                log.warning("could not publish event %s: %s", key, exc)
