"""fl_broker.protocol.events: lifecycle events on the wire, their routing keys and their refusals (the
publishing end is tests/server/test_event_stream.py)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
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


def test_headers_say_the_event_in_words_for_the_management_ui() -> None:
    data = {"accepted": 2, "targets": 2, "seconds": 0.0042, "metrics": {"loss": 0.25, "acc": np.float32(0.5)}}
    data["site_metrics"] = {"site-1": {"loss": 0.25}}  # a dict of dicts: the body has it, no header
    headers = EventMessage(1, "round_done", 3, data).headers()
    assert headers == {
        "x-fl-event": "round_done",
        "x-fl-run": 1,
        "x-fl-round": 3,
        "x-fl-summary": "run 1 round 3: round_done; accepted=2; targets=2; seconds=0.0042; "
        "metrics={loss=0.25, acc=0.5}",
        "x-fl-accepted": 2,
        "x-fl-targets": 2,
        "x-fl-seconds": "0.0042",  # text: pika writes no float into AMQP tables
        "x-fl-metrics": {"loss": "0.25", "acc": "0.5"},
    }


def test_headers_carry_no_arrays_and_bounded_text() -> None:
    data = {
        "weights": np.zeros(3),
        "raw": b"\x00\x01",
        "targets": [f"site-{i}" for i in range(100)],
        "reason": "x" * 1000,
        "when": np.int64(7),
        "loss": float("nan"),
        "ok": True,
    }
    headers = EventMessage(2, "run_failed", None, data).headers()
    assert "x-fl-weights" not in headers and "x-fl-raw" not in headers and "x-fl-round" not in headers
    shown, more = re.fullmatch(r"(.*) \(and (\d+) more\)", headers["x-fl-targets"]).groups()  # type: ignore[union-attr]
    assert shown.split(", ") == data["targets"][: 100 - int(more)]  # every name whole, the rest counted
    assert len(headers["x-fl-targets"]) <= 256 and len(headers["x-fl-reason"]) == 256
    assert headers["x-fl-reason"].endswith("...")
    assert headers["x-fl-when"] == 7 and type(headers["x-fl-when"]) is int
    assert headers["x-fl-loss"] == "nan" and headers["x-fl-ok"] is True
    assert (
        EventMessage(1, "x", None, {"third": 1 / 3, "big": 1e300})
        .headers()["x-fl-summary"]
        .endswith("third=0.333333; big=1e+300")
    )
    assert headers["x-fl-summary"].startswith("run 2: run_failed; targets=site-0, ")
    assert len(headers["x-fl-summary"]) <= 1024
