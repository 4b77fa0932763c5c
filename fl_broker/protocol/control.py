"""Request/reply over the control exchange, shared by the server, the workers and the admin console.

A `Request` is an envelope of kind "request" with fields {command, args}; when it expects an answer it has
`reply_to` + `correlation_id`, and the answer is a `Reply`, an envelope of kind "reply" with fields
{ok, result} or {ok: false, error: {kind, message}}. Handlers are plain functions of a Request; their
exceptions travel back as data, so a bad request never takes a program down. `RequestServer` serves a
control queue, `RequestClient` sends requests and matches the replies.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from fl_broker.errors import (
    BadRequest,
    DecodeError,
    FlBrokerError,
    MessageRefused,
    RemoteError,
    RequestTimeout,
    TransportError,
)
from fl_broker.protocol.message import WireMessage, optional_field
from fl_broker.transport import Delivery, Subscription, Transport
from fl_broker.wire import names
from fl_broker.wire.envelope import Envelope, Kind
from fl_broker.wire.messages import Shareable

log = logging.getLogger(__name__)


@dataclass
class Request(WireMessage):
    """A control request as it travels and as a handler sees it."""

    KIND = Kind.REQUEST
    FIELDS = {"command": (str,)}

    command: str
    args: dict[str, Any] = field(default_factory=dict)
    run: int = 0
    user_id: str | None = None  # on receipt: the broker-checked login of the sender (not on the wire)
    shareable: Shareable | None = None

    def arg(self, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        """An argument of the expected type; a BadRequest naming it otherwise."""
        if name not in self.args:
            if default is ...:
                raise BadRequest(f"{self.command}: missing argument {name!r}")
            return default
        value = self.args[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BadRequest(f"{self.command}: argument {name!r} has the wrong type ({type(value).__name__})")
        return value

    def to_envelope(self) -> Envelope:
        """A request envelope."""
        return Envelope(Kind.REQUEST, self.run, {"command": self.command, "args": self.args}, self.shareable)

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> Request:
        """The request in a checked envelope (no args: none)."""
        args = optional_field(envelope.fields, "args", (dict,), {})
        return cls(envelope.fields["command"], args, envelope.run, shareable=envelope.shareable)

    def received(self, delivery: Delivery) -> None:
        """Note the sender's login, which handlers check against what the request asks."""
        self.user_id = delivery.user_id


@dataclass
class Reply(WireMessage):
    """The answer to a request: {ok: true, result} or {ok: false, error: {kind, message}}."""

    KIND = Kind.REPLY
    FIELDS = {"ok": (bool,)}

    ok: bool
    result: Any = None
    error_kind: str = ""
    error_message: str = ""

    @classmethod
    def failure(cls, kind: str, message: str) -> Reply:
        """A reply saying the request failed with error `kind`."""
        return cls(False, error_kind=kind, error_message=message)

    def error(self) -> RemoteError:
        """The error of a failed reply, as the caller raises it."""
        return RemoteError(self.error_kind, self.error_message)

    def to_envelope(self) -> Envelope:
        """A reply envelope."""
        if self.ok:
            return Envelope(Kind.REPLY, fields={"ok": True, "result": self.result})
        error = {"kind": self.error_kind, "message": self.error_message}
        return Envelope(Kind.REPLY, fields={"ok": False, "error": error})

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> Reply:
        """The reply in a checked envelope; a failed one must say its error's kind and message."""
        if envelope.fields["ok"]:
            return cls(True, envelope.fields.get("result"))
        error = optional_field(envelope.fields, "error", (dict,), None)
        if error is None or type(error.get("kind")) is not str or type(error.get("message")) is not str:
            raise DecodeError("envelope.fields.error: a failed reply needs an error {kind (str), message (str)}")
        return cls.failure(error["kind"], error["message"])


RequestHandler = Callable[[Request], Any]


def command_handlers(owner: object) -> dict[str, RequestHandler]:
    """The `cmd_NAME` methods of `owner`, keyed by NAME: each program's commands are plain methods."""
    return {name.removeprefix("cmd_"): getattr(owner, name) for name in dir(owner) if name.startswith("cmd_")}


class RequestServer:
    """Serves one control queue: decode, dispatch by command, reply, ack."""

    def __init__(
        self,
        transport: Transport,
        queue: str,
        handlers: dict[str, RequestHandler],
        *,
        allowed_users: frozenset[str] | None = None,
    ) -> None:
        self.transport = transport
        self.queue = queue
        self.handlers = handlers
        self.allowed_users = allowed_users  # None: anyone who can publish to the queue
        self._subscription: Subscription | None = None

    def start(self) -> None:
        """Start consuming the queue."""
        self._subscription = self.transport.consume(self.queue, self._on_delivery)

    def stop(self) -> None:
        """Stop consuming (a request being handled finishes first)."""
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None

    def _on_delivery(self, delivery: Delivery) -> None:
        try:
            request = Request.decode_delivery(
                delivery, expected_sender=self.allowed_users, max_size=self.transport.options.max_body_size
            )
        except MessageRefused as exc:
            log.warning("dead-lettering a message on %s: %s", self.queue, exc)
            delivery.reject(str(exc))
            return
        handler = self.handlers.get(request.command)
        if handler is None:
            reply = Reply.failure("UnknownCommand", f"unknown command {request.command!r}")
        else:
            reply = self._run(handler, request)
        if delivery.reply_to:
            self._reply(delivery, reply)
        delivery.ack()  # after the reply is confirmed: a crash before this means the request is redone

    def _run(self, handler: RequestHandler, request: Request) -> Reply:
        try:
            return Reply(True, handler(request))
        except FlBrokerError as exc:
            log.info("%s refused: %s", request.command, exc)
            return Reply.failure(type(exc).__name__, str(exc))
        except Exception as exc:  # a handler bug must not take the program down
            log.exception("%s failed", request.command)
            return Reply.failure(type(exc).__name__, str(exc))

    def _reply(self, delivery: Delivery, reply: Reply) -> None:
        body = reply.encode()
        try:
            self.transport.publish(
                names.REPLY_EXCHANGE, delivery.reply_to or "", body, correlation_id=delivery.correlation_id
            )
        except TransportError as exc:  # the caller went away (its reply queue is gone): nothing to answer
            log.info("could not reply to %s: %s", delivery.reply_to, exc)


class RequestClient:
    """Sends requests on fl.control and matches replies by correlation id on a private queue."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._pending: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()
        self._reply_queue = transport.reply_queue()
        self._subscription = transport.consume(self._reply_queue, self._on_reply)

    def request(
        self, route: str, command: str, args: dict[str, Any] | None = None, *, run: int = 0, ttl: float | None = None
    ) -> Future[Any]:
        """Send a request to `route` (`server` or a site name); the Future resolves with the result or a
        RemoteError. With `ttl`, a request not picked up within that many seconds is dropped by the broker,
        so a command the caller gave up on never runs later (e.g. when a stopped server comes back)."""
        correlation_id = uuid.uuid4().hex
        future: Future[Any] = Future()
        with self._lock:
            self._pending[correlation_id] = future
        body = Request(command, args or {}, run).encode()
        try:
            self.transport.publish(
                names.CONTROL_EXCHANGE,
                route,
                body,
                correlation_id=correlation_id,
                reply_to=self._reply_queue,
                expiration=ttl,
            )
        except Exception:
            with self._lock:
                self._pending.pop(correlation_id, None)
            raise
        future.add_done_callback(lambda _: self._forget(correlation_id))
        return future

    def call(
        self, route: str, command: str, args: dict[str, Any] | None = None, *, timeout: float, run: int = 0
    ) -> Any:
        """Send a request and wait for its result; RequestTimeout if none comes within `timeout` seconds."""
        future = self.request(route, command, args, run=run, ttl=timeout)
        try:
            return future.result(timeout)
        except FutureTimeout as exc:
            future.cancel()
            raise RequestTimeout(f"{route} did not answer {command!r} within {timeout:g} s") from exc
        except CancelledError as exc:  # close() was called while waiting
            raise RequestTimeout(f"{command!r} to {route} was cancelled: the client is closing") from exc

    def send(self, route: str, command: str, args: dict[str, Any] | None = None, *, run: int = 0) -> None:
        """Send a request that expects no reply (e.g. a heartbeat)."""
        self.transport.publish(names.CONTROL_EXCHANGE, route, Request(command, args or {}, run).encode())

    def close(self) -> None:
        """Stop listening for replies; pending requests fail."""
        self._subscription.cancel()
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.cancel()

    def _forget(self, correlation_id: str) -> None:
        with self._lock:
            self._pending.pop(correlation_id, None)

    def _on_reply(self, delivery: Delivery) -> None:
        delivery.ack()  # a reply is only useful now; nothing to redo if it is lost
        with self._lock:
            future = self._pending.get(delivery.correlation_id or "")
        if future is None or future.done():
            return
        try:
            reply = Reply.decode_delivery(delivery, max_size=self.transport.options.max_body_size)
        except DecodeError as exc:
            reply = Reply.failure("DecodeError", f"unreadable reply: {exc}")
        try:
            if reply.ok:
                future.set_result(reply.result)
            else:
                future.set_exception(reply.error())
        except Exception as exc:  # e.g. the future was cancelled meanwhile
            log.debug("dropping a reply: %s", exc)
