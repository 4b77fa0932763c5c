"""Request/reply over the control exchange, shared by the server, the workers and the admin console.

A request is an envelope of kind "request" with fields {command, args}; when it expects an answer it has
`reply_to` + `correlation_id`, and the answer is an envelope of kind "reply" with fields {ok, result} or
{ok: false, error: {kind, message}}. Handlers are plain functions of a Request; their exceptions travel
back as data, so a bad request never takes a program down.
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

from fl_broker.errors import DecodeError, FlBrokerError, RemoteError, RequestTimeout, TransportError
from fl_broker.transport import Delivery, Subscription, Transport
from fl_broker.wire import names
from fl_broker.wire.envelope import Envelope, decode_envelope, encode_envelope
from fl_broker.wire.messages import Shareable

log = logging.getLogger(__name__)


@dataclass
class Request:
    """A decoded control request as a handler sees it."""

    command: str
    args: dict[str, Any]
    run: int = 0
    user_id: str | None = None  # the broker-checked login of the sender
    shareable: Shareable | None = None
    fields: dict[str, Any] = field(default_factory=dict)

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


class BadRequest(FlBrokerError):
    """The request is malformed or not allowed now; the message tells the caller why."""


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
        if self.allowed_users is not None and delivery.user_id not in self.allowed_users:
            log.warning("dead-lettering a request on %s from user %r", self.queue, delivery.user_id)
            delivery.reject(f"request from user {delivery.user_id!r}, who may not send to {self.queue}")
            return
        try:
            request = self._decode(delivery)
        except DecodeError as exc:
            log.warning("dead-lettering a bad message on %s: %s", self.queue, exc)
            delivery.reject(str(exc))
            return
        handler = self.handlers.get(request.command)
        if handler is None:
            reply: dict[str, Any] = _error("UnknownCommand", f"unknown command {request.command!r}")
        else:
            reply = self._run(handler, request)
        if delivery.reply_to:
            self._reply(delivery, reply)
        delivery.ack()  # after the reply is confirmed: a crash before this means the request is redone

    def _decode(self, delivery: Delivery) -> Request:
        if delivery.content_type not in (None, names.CONTENT_TYPE):
            raise DecodeError(f"content type {delivery.content_type!r}, expected {names.CONTENT_TYPE}")
        envelope = decode_envelope(delivery.body, max_size=self.transport.options.max_body_size)
        if envelope.kind != "request":
            raise DecodeError(f"envelope.kind: expected 'request', got {envelope.kind!r}")
        command, args = envelope.fields.get("command"), envelope.fields.get("args", {})
        if not isinstance(command, str) or not isinstance(args, dict):
            raise DecodeError("envelope.fields: expected command (str) and args (map)")
        return Request(command, args, envelope.run, delivery.user_id, envelope.shareable, envelope.fields)

    def _run(self, handler: RequestHandler, request: Request) -> dict[str, Any]:
        try:
            return {"ok": True, "result": handler(request)}
        except FlBrokerError as exc:
            log.info("%s refused: %s", request.command, exc)
            return _error(type(exc).__name__, str(exc))
        except Exception as exc:  # a handler bug must not take the program down
            log.exception("%s failed", request.command)
            return _error(type(exc).__name__, str(exc))

    def _reply(self, delivery: Delivery, reply: dict[str, Any]) -> None:
        body = encode_envelope(Envelope(kind="reply", fields=reply))
        try:
            self.transport.publish(
                names.DEFAULT_EXCHANGE, delivery.reply_to or "", body, correlation_id=delivery.correlation_id
            )
        except TransportError as exc:  # the caller went away (its reply queue is gone): nothing to answer
            log.info("could not reply to %s: %s", delivery.reply_to, exc)


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"kind": kind, "message": message}}


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
        body = encode_envelope(Envelope(kind="request", run=run, fields={"command": command, "args": args or {}}))
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
        body = encode_envelope(Envelope(kind="request", run=run, fields={"command": command, "args": args or {}}))
        self.transport.publish(names.CONTROL_EXCHANGE, route, body)

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
            envelope = decode_envelope(delivery.body, max_size=self.transport.options.max_body_size)
            reply = envelope.fields
            if reply.get("ok"):
                future.set_result(reply.get("result"))
            else:
                error = reply.get("error") or {}
                future.set_exception(RemoteError(str(error.get("kind", "Error")), str(error.get("message", ""))))
        except DecodeError as exc:
            future.set_exception(RemoteError("DecodeError", f"unreadable reply: {exc}"))
        except Exception as exc:  # e.g. the future was cancelled meanwhile
            log.debug("dropping a reply: %s", exc)
