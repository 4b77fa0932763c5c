"""fl_broker.protocol.control: Request and Reply on the wire, and request/reply (results, errors as data,
refusals, expiry, closing) between a RequestServer and a RequestClient on the memory transport."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from fl_broker.errors import BadRequest, DecodeError, MessageRefused, RemoteError, RequestTimeout
from fl_broker.protocol.control import Reply, Request, RequestClient, RequestServer, command_handlers
from fl_broker.transport.memory import MemoryBroker
from fl_broker.wire import codec, names
from tests.support.deliveries import Settlements

TIMEOUT = 5.0


def raw_body(kind: str, fields: dict[str, Any]) -> bytes:
    return codec.encode({"v": 1, "kind": kind, "run": 0, "fields": fields, "shareable": None})


# --- the messages --------------------------------------------------------------------------------------


def test_a_request_round_trips_and_notes_its_sender() -> None:
    body = Request("deploy_app", {"app": "a", "run": 2}, run=2).encode()
    request = Request.decode_delivery(Settlements().delivery(body, user_id="admin"))
    assert (request.command, request.args, request.run, request.user_id) == (
        "deploy_app",
        {"app": "a", "run": 2},
        2,
        "admin",
    )


def test_a_request_without_args_has_none() -> None:
    request = Request.decode_delivery(Settlements().delivery(raw_body("request", {"command": "bye"})))
    assert request.args == {}


@pytest.mark.parametrize(
    "body, pattern",
    [
        (raw_body("request", {}), r"^fields\.command is missing: a request needs fields\.command \(str\)$"),
        (raw_body("request", {"command": 3}), r"^fields\.command is int"),
        (raw_body("request", {"command": "x", "args": [1]}), r"^envelope\.fields\.args: expected map, got list$"),
        (raw_body("reply", {"ok": True}), r"^envelope\.kind: expected 'request', got 'reply'$"),
    ],
)
def test_request_refusals(body: bytes, pattern: str) -> None:
    with pytest.raises(DecodeError, match=pattern):
        Request.decode_delivery(Settlements().delivery(body))


def test_a_request_from_a_login_not_allowed_is_refused() -> None:
    body = Request("shutdown").encode()
    with pytest.raises(MessageRefused, match="^request from user 'site-1', but only 'server' may send it$"):
        Request.decode_delivery(Settlements().delivery(body, user_id="site-1"), expected_sender=frozenset({"server"}))


def test_replies_round_trip() -> None:
    ok = Reply.decode_delivery(Settlements().delivery(Reply(True, [1, "two"]).encode()))
    assert (ok.ok, ok.result) == (True, [1, "two"])
    failed = Reply.decode_delivery(Settlements().delivery(Reply.failure("BadRequest", "why").encode()))
    assert not failed.ok and str(failed.error()) == "BadRequest: why" and failed.error().kind == "BadRequest"


@pytest.mark.parametrize(
    "fields, pattern",
    [
        ({"ok": "yes"}, r"^fields\.ok is str: a reply needs fields\.ok \(bool\)$"),
        ({"ok": False}, r"^envelope\.fields\.error: a failed reply needs an error"),
        ({"ok": False, "error": {"kind": "X"}}, r"^envelope\.fields\.error: a failed reply needs an error"),
        ({"ok": False, "error": "boom"}, r"^envelope\.fields\.error: expected map, got str$"),
    ],
)
def test_reply_refusals(fields: dict[str, Any], pattern: str) -> None:
    with pytest.raises(DecodeError, match=pattern):
        Reply.decode_delivery(Settlements().delivery(raw_body("reply", fields)))


# --- request/reply on the memory transport --------------------------------------------------------------


class Handlers:
    """The commands of the test server."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, str | None]] = []
        self.seen = threading.Event()

    def cmd_echo(self, request: Request) -> Any:
        self.calls.append(("echo", request.args, request.user_id))
        self.seen.set()
        return request.args

    def cmd_refuse(self, request: Request) -> Any:
        raise BadRequest(f"not now: {request.arg('why', str)}")

    def cmd_crash(self, request: Request) -> Any:
        return 1 / 0


@dataclass
class Control:
    broker: MemoryBroker
    handlers: Handlers
    server: RequestServer
    client: RequestClient

    def dead_letter_reasons(self) -> list[str]:
        return [m.headers[names.REJECT_REASON_HEADER] for m in self.broker.messages(names.DEAD_LETTER_QUEUE)]

    def wait_dead_letters(self, count: int) -> list[str]:
        deadline = time.monotonic() + TIMEOUT
        while len(self.broker.messages(names.DEAD_LETTER_QUEUE)) < count:
            assert time.monotonic() < deadline, self.dead_letter_reasons()
            time.sleep(0.01)
        return self.dead_letter_reasons()


def make_control(*, allowed_users: frozenset[str] | None = None, start: bool = True) -> Control:
    broker = MemoryBroker()
    server_side = broker.connect(user="server")
    server_side.declare(names.server_topology())
    handlers = Handlers()
    server = RequestServer(
        server_side, names.SERVER_CONTROL_QUEUE, command_handlers(handlers), allowed_users=allowed_users
    )
    if start:
        server.start()
    return Control(broker, handlers, server, RequestClient(broker.connect(user="admin")))


@pytest.fixture
def control() -> Iterator[Control]:
    made = make_control()
    yield made
    made.client.close()
    made.server.stop()


def test_call_returns_the_handlers_result_and_the_handler_sees_the_login(control: Control) -> None:
    assert control.client.call(names.SERVER, "echo", {"a": [1, 2]}, timeout=TIMEOUT) == {"a": [1, 2]}
    assert control.handlers.calls == [("echo", {"a": [1, 2]}, "admin")]


@pytest.mark.parametrize(
    "command, args, kind, message",
    [
        ("refuse", {"why": "busy"}, "BadRequest", "not now: busy"),
        ("refuse", {}, "BadRequest", "refuse: missing argument 'why'"),
        ("refuse", {"why": 3}, "BadRequest", "refuse: argument 'why' has the wrong type (int)"),
        ("crash", {}, "ZeroDivisionError", "division by zero"),
        ("nope", {}, "UnknownCommand", "unknown command 'nope'"),
    ],
)
def test_errors_travel_back_as_data(control: Control, command: str, args: dict, kind: str, message: str) -> None:
    with pytest.raises(RemoteError) as raised:
        control.client.call(names.SERVER, command, args, timeout=TIMEOUT)
    assert (raised.value.kind, raised.value.message) == (kind, message)
    assert control.client.call(names.SERVER, "echo", {}, timeout=TIMEOUT) == {}  # the server is still serving


def test_send_expects_no_reply(control: Control) -> None:
    control.client.send(names.SERVER, "echo", {"beat": 1})
    assert control.handlers.seen.wait(TIMEOUT)
    assert control.handlers.calls == [("echo", {"beat": 1}, "admin")]


def test_a_bad_request_is_dead_lettered_and_the_server_keeps_serving(control: Control) -> None:
    intruder = control.broker.connect(user="admin")
    intruder.publish(names.CONTROL_EXCHANGE, names.SERVER, raw_body("request", {"command": 3}))
    [reason] = control.wait_dead_letters(1)
    assert reason.startswith("fields.command is int")
    assert control.client.call(names.SERVER, "echo", {}, timeout=TIMEOUT) == {}


def test_a_request_from_a_login_not_allowed_is_dead_lettered_unhandled() -> None:
    made = make_control(allowed_users=frozenset({"server"}))
    try:
        with pytest.raises(RequestTimeout, match="did not answer 'echo' within 0.3 s"):
            made.client.call(names.SERVER, "echo", {}, timeout=0.3)
        assert made.wait_dead_letters(1) == ["request from user 'admin', but only 'server' may send it"]
        assert made.handlers.calls == []
    finally:
        made.client.close()
        made.server.stop()


def test_a_request_the_caller_gave_up_on_expires_and_never_runs() -> None:
    made = make_control(start=False)  # the server is down
    try:
        with pytest.raises(RequestTimeout):
            made.client.call(names.SERVER, "echo", {"late": True}, timeout=0.2)
        time.sleep(0.1)
        made.server.start()  # it comes back after the caller gave up
        assert made.wait_dead_letters(1) == ["expired"]
        assert made.client.call(names.SERVER, "echo", {"now": True}, timeout=TIMEOUT) == {"now": True}
        assert made.handlers.calls == [("echo", {"now": True}, "admin")]
    finally:
        made.client.close()
        made.server.stop()


def test_an_unreadable_reply_fails_the_call_with_a_decode_error() -> None:
    made = make_control(start=False)
    try:
        future = made.client.request(names.SERVER, "echo", {})
        [sent] = made.broker.messages(names.SERVER_CONTROL_QUEUE)
        forger = made.broker.connect(user="server")
        forger.publish(names.DEFAULT_EXCHANGE, sent.reply_to or "", b"\x00junk", correlation_id=sent.correlation_id)
        with pytest.raises(RemoteError) as raised:
            future.result(TIMEOUT)
        assert raised.value.kind == "DecodeError" and raised.value.message.startswith("unreadable reply:")
    finally:
        made.client.close()


def test_closing_the_client_cancels_what_is_pending() -> None:
    made = make_control(start=False)
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            made.client.call(names.SERVER, "echo", {}, timeout=TIMEOUT)
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    deadline = time.monotonic() + TIMEOUT
    while not made.broker.messages(names.SERVER_CONTROL_QUEUE):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    made.client.close()
    waiter.join(TIMEOUT)
    [error] = outcome
    assert isinstance(error, RequestTimeout) and "cancelled: the client is closing" in str(error)
