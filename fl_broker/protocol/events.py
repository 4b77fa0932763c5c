"""The event protocol: the server publishes each lifecycle event of a run on fl.event (for monitoring; the
admin console's `watch` and the fl.event.history queue read them).

On the wire an event is an envelope of kind "event" with fields {type, round, data, time}: the event type
(FLARE's names, e.g. "round_started"), the round or null, small details, and the server's wall-clock time.
The routing key says the same in words: `run.N.round.R.started`, `run.N.round.R.done`,
`run.N.round.R.<type>` or `run.N.<type>`.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from typing import Any

from fl_broker.errors import DecodeError, MessageRefused
from fl_broker.protocol.message import WireMessage
from fl_broker.transport import Delivery, Subscription, Transport
from fl_broker.wire import names
from fl_broker.wire.envelope import Envelope, Kind

__all__ = ["EventMessage", "follow_run"]

_SHORT_NAMES = {"round_started": "started", "round_done": "done"}


@dataclass
class EventMessage(WireMessage):
    """One lifecycle event of run `run` as it travels."""

    KIND = Kind.EVENT
    FIELDS = {"type": (str,), "round": (int, type(None)), "data": (dict,), "time": (float, int)}

    run: int
    type: str
    round: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0  # seconds since the epoch, on the server's clock

    def routing_key(self) -> str:
        """run.N.round.R.started / run.N.round.R.done / run.N.round.R.<type> / run.N.<type>."""
        parts: list[object] = ["round", self.round] if self.round is not None else []
        return names.event_key(self.run, *parts, _SHORT_NAMES.get(self.type, self.type))

    def to_envelope(self) -> Envelope:
        """An event envelope."""
        fields = {"type": self.type, "round": self.round, "data": self.data, "time": self.time}
        return Envelope(Kind.EVENT, self.run, fields)

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> EventMessage:
        """The event in a checked envelope (data keys are str: the codec guarantees nothing more)."""
        fields = envelope.fields
        for key in fields["data"]:
            if type(key) is not str:
                raise DecodeError(f"envelope.fields.data: keys must be str, got {key!r}")
        return cls(envelope.run, fields["type"], fields["round"], fields["data"], float(fields["time"]))


def follow_run(transport: Transport, run: int) -> tuple[Subscription, queue.SimpleQueue[EventMessage]]:
    """Follow run `run`'s events on a private queue of `transport`: the subscription (cancel it when done)
    and the queue its events arrive in. Monitoring only: each delivery is acked at once and one that does
    not decode is dropped. TransportError (or NotImplementedError) if no private queue can be had, e.g. for
    a login that may not declare one."""
    inbox: queue.SimpleQueue[EventMessage] = queue.SimpleQueue()

    def on_event(delivery: Delivery) -> None:
        delivery.ack()  # nothing to redo if an event is lost
        try:
            inbox.put(EventMessage.decode_delivery(delivery, max_size=transport.options.max_body_size))
        except MessageRefused:
            pass  # not ours to judge: the server's own queues dead-letter bad messages

    binding = ((names.EVENT_EXCHANGE, names.event_key(run, "#")),)
    return transport.consume(transport.private_queue(binding), on_event), inbox
