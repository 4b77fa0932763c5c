"""The event protocol: the server publishes each lifecycle event of a run on fl.event (for monitoring; the
admin console's `watch` and the fl.event.history queue read them).

On the wire an event is an envelope of kind "event" with fields {type, round, data, time}: the event type
(FLARE's names, e.g. "round_started"), the round or null, small details, and the server's wall-clock time.
The routing key says the same in words: `run.N.round.R.started`, `run.N.round.R.done`,
`run.N.round.R.<type>` or `run.N.<type>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fl_broker.errors import DecodeError
from fl_broker.protocol.message import WireMessage
from fl_broker.wire import names
from fl_broker.wire.envelope import Envelope, Kind

__all__ = ["EventMessage"]

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
