"""fl_broker.protocol.events: lifecycle events on the wire, their routing keys and their refusals (the
publishing end is tests/server/test_event_stream.py)."""

from __future__ import annotations

from typing import Any

import pytest

from fl_broker.errors import DecodeError
from fl_broker.protocol.events import EventMessage
from fl_broker.wire import codec
from tests.support.deliveries import Settlements


@pytest.mark.parametrize(
    "event_type, round_, key",
    [
        ("round_started", 3, "run.1.round.3.started"),
        ("round_done", 3, "run.1.round.3.done"),
        ("after_aggregation", 0, "run.1.round.0.after_aggregation"),
        ("training_finished", None, "run.1.training_finished"),
    ],
)
def test_routing_keys_say_the_run_round_and_type(event_type: str, round_: int | None, key: str) -> None:
    assert EventMessage(1, event_type, round_).routing_key() == key


def test_an_event_round_trips() -> None:
    sent = EventMessage(2, "after_contribution_accept", 1, {"site": "site-1", "accepted": True}, 1700000000.25)
    assert EventMessage.decode_delivery(Settlements().delivery(sent.encode())) == sent


def test_a_whole_second_time_is_read_as_a_float() -> None:
    body = raw_body({"type": "round_done", "round": 0, "data": {}, "time": 17})
    got = EventMessage.decode_delivery(Settlements().delivery(body))
    assert got.time == 17.0 and type(got.time) is float


def raw_body(fields: dict[str, Any], kind: str = "event") -> bytes:
    return codec.encode({"v": 1, "kind": kind, "run": 1, "fields": fields, "shareable": None})


GOOD = {"type": "round_done", "round": 0, "data": {}, "time": 1.5}


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"type": None}, r"^fields\.type is null: an? event needs fields\.type \(str\)"),
        ({"round": "0"}, r"^fields\.round is str: "),
        ({"data": None}, r"^fields\.data is null: "),
        ({"time": "now"}, r"^fields\.time is str: "),
        ({"data": {1: "x"}}, r"^envelope\.fields\.data: keys must be str, got 1$"),
    ],
)
def test_event_refusals(change: dict[str, Any], pattern: str) -> None:
    with pytest.raises(DecodeError, match=pattern):
        EventMessage.decode_delivery(Settlements().delivery(raw_body({**GOOD, **change})))


def test_another_kind_on_the_event_stream_is_refused() -> None:
    with pytest.raises(DecodeError, match=r"^envelope\.kind: expected 'event', got 'request'$"):
        EventMessage.decode_delivery(Settlements().delivery(raw_body(GOOD, kind="request")))
