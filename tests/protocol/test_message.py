"""fl_broker.protocol.message: the checks every decode_delivery makes, the sender rule, and the bytes on
the wire (the same envelope as before the messages were typed)."""

from __future__ import annotations

from typing import Any

import pytest

from fl_broker.errors import DecodeError, Unauthorized
from fl_broker.protocol.control import Reply, Request
from fl_broker.protocol.events import EventMessage
from fl_broker.protocol.message import check_sender, optional_field
from fl_broker.protocol.tasks import ResultMessage, TaskMessage
from fl_broker.wire import codec
from fl_broker.wire.envelope import shareable_to_dict
from tests.support.deliveries import Settlements, weights

# --- the sender ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user, expected",
    [("server", "server"), ("admin", frozenset({"admin", "ops"})), ("anyone", None), (None, None)],
)
def test_check_sender_lets_the_expected_logins_through(user: str | None, expected: Any) -> None:
    check_sender(user, expected, "task")


@pytest.mark.parametrize(
    "user, expected, message",
    [
        ("site-1", "server", "task from user 'site-1', but only 'server' may send it"),
        (None, "server", "task from user None, but only 'server' may send it"),
        ("site-1", frozenset({"ops", "admin"}), "task from user 'site-1', but only 'admin' or 'ops' may send it"),
        ("site-1", frozenset(), "task from user 'site-1', but no user may send it"),
    ],
)
def test_check_sender_refuses_naming_the_sender_and_who_may(user: str | None, expected: Any, message: str) -> None:
    with pytest.raises(Unauthorized) as refused:
        check_sender(user, expected, "task")
    assert str(refused.value) == message


def test_the_sender_is_checked_before_the_body_is_decoded() -> None:
    forged = Settlements().delivery(b"not even msgpack", user_id="site-1")
    with pytest.raises(Unauthorized, match="^task from user 'site-1'"):
        TaskMessage.decode_delivery(forged, expected_sender="server")


def test_a_sender_that_depends_on_the_message_is_checked_after_decoding() -> None:
    seen = []

    def expected(result: ResultMessage) -> str:
        seen.append(result.site)
        return "site-2"

    body = ResultMessage(1, "site-9", 0, weights()).encode()
    with pytest.raises(Unauthorized, match="^result from user 'site-1', but only 'site-2' may send it$"):
        ResultMessage.decode_delivery(Settlements().delivery(body, user_id="site-1"), expected_sender=expected)
    assert seen == ["site-9"]


# --- content type, size, kind, fields -------------------------------------------------------------------


def test_no_content_type_is_accepted_and_another_is_refused() -> None:
    body = TaskMessage(1, 0, weights()).encode()
    assert TaskMessage.decode_delivery(Settlements().delivery(body, content_type=None)).round == 0
    with pytest.raises(DecodeError, match=r"^content type 'application/json', expected application/msgpack$"):
        TaskMessage.decode_delivery(Settlements().delivery(body, content_type="application/json"))


def test_max_size_reaches_the_codec() -> None:
    body = TaskMessage(1, 0, weights()).encode()
    with pytest.raises(DecodeError, match="over max_size"):
        TaskMessage.decode_delivery(Settlements().delivery(body), max_size=len(body) - 1)


def test_every_field_problem_is_named_with_what_the_kind_needs() -> None:
    body = codec.encode({"v": 1, "kind": "result", "run": 1, "fields": {"round": "0"}, "shareable": None})
    with pytest.raises(DecodeError) as refused:
        ResultMessage.decode_delivery(Settlements().delivery(body))
    assert str(refused.value) == (
        "fields.site is missing, fields.round is str, the shareable is missing: "
        "a result needs fields.site (str), fields.round (int) and a shareable"
    )


def test_optional_field_gives_the_default_or_checks_the_type() -> None:
    assert optional_field({}, "args", (dict,), {"x": 1}) == {"x": 1}
    assert optional_field({"args": {"a": 2}}, "args", (dict,), {}) == {"a": 2}
    with pytest.raises(DecodeError, match=r"^envelope\.fields\.n: expected int, got bool$"):
        optional_field({"n": True}, "n", (int,), 0)


# --- the bytes on the wire ------------------------------------------------------------------------------


def envelope_bytes(kind: str, run: int, fields: dict[str, Any], shareable: Any = None) -> bytes:
    """The envelope as the wire contract spells it, built without the message classes."""
    raw = {"v": 1, "kind": kind, "run": run, "fields": fields, "shareable": shareable}
    return codec.encode(raw, where="envelope")


def test_the_typed_messages_encode_the_documented_envelope() -> None:
    task = weights()
    shareable = shareable_to_dict(task)
    assert TaskMessage(2, 3, task).encode() == envelope_bytes("task", 2, {"round": 3}, shareable)
    assert ResultMessage(2, "site-1", 3, task).encode() == envelope_bytes(
        "result", 2, {"site": "site-1", "round": 3}, shareable
    )
    assert Request("check_status", {"target": "server"}, 2).encode() == envelope_bytes(
        "request", 2, {"command": "check_status", "args": {"target": "server"}}
    )
    assert Reply(True, {"x": 1}).encode() == envelope_bytes("reply", 0, {"ok": True, "result": {"x": 1}})
    assert Reply.failure("BadRequest", "no").encode() == envelope_bytes(
        "reply", 0, {"ok": False, "error": {"kind": "BadRequest", "message": "no"}}
    )
    assert EventMessage(2, "round_done", 3, {"seconds": 0.5}, 12.5).encode() == envelope_bytes(
        "event", 2, {"type": "round_done", "round": 3, "data": {"seconds": 0.5}, "time": 12.5}
    )
