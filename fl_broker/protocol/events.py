"""The event protocol: the server publishes each lifecycle event of a run on fl.event (for monitoring; the
admin console's `watch` and the fl.event.history queue read them).

On the wire an event is an envelope of kind "event" with fields {type, round, data, time}: the event type
(FLARE's names, e.g. "round_started"), the round or null, small details, and the server's wall-clock time.
The routing key says the same in words: `run.N.round.R.started`, `run.N.round.R.done`,
`run.N.round.R.<type>` or `run.N.<type>`. So do the AMQP headers (`EventMessage.headers`), for people who
read the stream in the management UI, where a msgpack body is bytes: type, run, round, a one-line summary,
and each small detail (numbers, text, lists of names, a dict of metrics) as a header of its own. Details
that are not small (a dict of dicts, arrays) stay in the body only.
"""

from __future__ import annotations

import math
import numbers
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
MAX_TEXT = 256  # characters of one header's text (a long reason is cut: the body has it whole)
MAX_SUMMARY = 1024
MAX_ENTRIES = 64  # entries of a dict of numbers shown in one header


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

    def headers(self) -> dict[str, Any]:
        """AMQP headers a person can read: x-fl-event (type), x-fl-run, x-fl-round, x-fl-summary (one line),
        and x-fl-<detail> for each small detail of `data` (numbers, text, names, a dict of metrics)."""
        details = {key: shown for key, value in self.data.items() if (shown := _readable(value)) is not None}
        found: dict[str, Any] = {names.EVENT_TYPE_HEADER: self.type, names.EVENT_RUN_HEADER: self.run}
        if self.round is not None:
            found[names.EVENT_ROUND_HEADER] = self.round
        found[names.EVENT_SUMMARY_HEADER] = self._summary(details)
        for key, value in details.items():
            found[names.EVENT_DETAIL_PREFIX + key.replace("_", "-")] = value
        return found

    def _summary(self, details: dict[str, Any]) -> str:
        """E.g. 'run 1 round 3: round_done; accepted=2; targets=2; seconds=0.01; metrics={loss=0.25}'."""
        where = f"run {self.run}" + (f" round {self.round}" if self.round is not None else "")
        said = "; ".join(f"{key}={_text(value)}" for key, value in details.items())
        return _cut(f"{where}: {self.type}" + (f"; {said}" if said else ""), MAX_SUMMARY)

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


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _readable(value: Any) -> Any:
    """`value` as a header a person reads (None: not small enough to show): integers and booleans as they
    are, other numbers as text (AMQP tables as pika writes them have no float type), text cut to MAX_TEXT."""
    if isinstance(value, bool) or isinstance(value, str):
        return _cut(value, MAX_TEXT) if isinstance(value, str) else value
    if isinstance(value, numbers.Integral):
        return int(value)  # numpy's integers too: AMQP tables take Python's
    if _is_number(value):  # pika's AMQP tables have no float: 6 significant digits as text (the body is exact)
        return f"{float(value):.6g}" if math.isfinite(value) else str(float(value))
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) or _is_number(v) for v in value):
        return _listed([str(v) for v in value])
    if isinstance(value, dict) and value and all(isinstance(k, str) and _is_number(v) for k, v in value.items()):
        return {_cut(k, MAX_TEXT): _readable(v) for k, v in list(value.items())[:MAX_ENTRIES]}
    return None


def _listed(items: list[str]) -> str:
    """'a, b, c', or as many as fit in MAX_TEXT followed by '(and N more)'."""
    shown: list[str] = []
    for index, item in enumerate(items):
        more = len(items) - index - 1
        room = MAX_TEXT - len(", ".join([*shown, item])) - (len(f" (and {more} more)") if more else 0)
        if room < 0:
            return ", ".join(shown) + f" (and {len(items) - index} more)"
        shown.append(item)
    return ", ".join(shown)


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
