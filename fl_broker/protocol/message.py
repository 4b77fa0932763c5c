"""The base of every typed message on the wire: one `encode` and one `decode_delivery` that does every check.

A message class names its envelope kind, the fields it requires with their types, and whether it carries a
Shareable; `decode_delivery` then checks, in this order and nowhere else: the sender's login (when the
expected login is known before decoding), the content type, the envelope (version, kind), the required
fields, and the sender again when the expected login depends on the message (a result must come from the
site it names). A refusal is a `DecodeError` or an `Unauthorized`, both `MessageRefused`, whose text is
the reason a receiver dead-letters the message with.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from fl_broker.errors import DecodeError, Unauthorized
from fl_broker.transport import Delivery, Pieces
from fl_broker.wire import names
from fl_broker.wire.envelope import Envelope, Kind, decode_envelope, encode_envelope, encode_envelope_parts

__all__ = ["Senders", "WireMessage", "check_sender", "optional_field"]

# Who may send a message: one broker login, a set of them, or None for anyone who can reach the queue.
Senders = str | frozenset[str] | None

M = TypeVar("M", bound="WireMessage")


def check_sender(user_id: str | None, expected: Senders, what: str) -> None:
    """Unauthorized unless `user_id` (the login the broker checked) is one of `expected` (None: anyone)."""
    if expected is None:
        return
    allowed = frozenset({expected}) if isinstance(expected, str) else expected
    if user_id in allowed:
        return
    who = " or ".join(repr(login) for login in sorted(allowed))
    raise Unauthorized(f"{what} from user {user_id!r}, but {'only ' + who if who else 'no user'} may send it")


def optional_field(fields: Mapping[str, Any], name: str, kinds: tuple[type, ...], default: Any) -> Any:
    """`fields[name]` if present and of one of `kinds` (exactly: a bool is no int), `default` if absent."""
    if name not in fields:
        return default
    value = fields[name]
    if type(value) not in kinds:
        expected = " or ".join(_type_name(kind) for kind in kinds)
        raise DecodeError(f"envelope.fields.{name}: expected {expected}, got {_type_name(type(value))}")
    return value


class WireMessage(ABC):
    """A message of one envelope kind. Subclasses are dataclasses that set the class attributes below and
    convert to and from the envelope; encoding and every receive-side check live here, once."""

    KIND: ClassVar[Kind]
    # Required fields and their exact types (`type(None)` for a field that may be null).
    FIELDS: ClassVar[Mapping[str, tuple[type, ...]]] = {}
    NEEDS_SHAREABLE: ClassVar[bool] = False

    @abstractmethod
    def to_envelope(self) -> Envelope:
        """The envelope that carries this message."""

    @classmethod
    @abstractmethod
    def from_envelope(cls: type[M], envelope: Envelope) -> M:
        """The message in `envelope`, whose kind, required fields and Shareable are already checked."""

    def received(self, delivery: Delivery) -> None:
        """Called once decoded, with the delivery it came in (a message may note e.g. its sender)."""
        return None  # most messages carry everything they need in the envelope

    def encode(self) -> bytes:
        """The message body. TypeError/ValueError (naming the path) if something in it cannot travel."""
        return encode_envelope(self.to_envelope())

    def encode_pieces(self) -> Pieces:
        """The message body as pieces that share the arrays' memory, for publishing a model-sized message
        without a second copy of it. Raises like `encode`."""
        return Pieces(encode_envelope_parts(self.to_envelope()))

    @classmethod
    def decode_delivery(
        cls: type[M],
        delivery: Delivery,
        *,
        expected_sender: Senders | Callable[[M], Senders] = None,
        max_size: int | None = None,
    ) -> M:
        """The message `delivery` carries, after every check; MessageRefused (DecodeError or Unauthorized)
        naming what is wrong. `expected_sender` is a login, a set of logins, or a function of the decoded
        message giving them (None: anyone)."""
        what = cls.KIND.value
        if not callable(expected_sender):  # checked first: a forged body is not worth decoding
            check_sender(delivery.user_id, expected_sender, what)
        if delivery.content_type not in (None, names.CONTENT_TYPE):
            raise DecodeError(f"content type {delivery.content_type!r}, expected {names.CONTENT_TYPE}")
        envelope = decode_envelope(delivery.body, max_size=max_size)
        if envelope.kind is not cls.KIND:
            raise DecodeError(f"envelope.kind: expected {cls.KIND.value!r}, got {envelope.kind.value!r}")
        cls._check_fields(envelope)
        message = cls.from_envelope(envelope)
        message.received(delivery)
        if callable(expected_sender):
            check_sender(delivery.user_id, expected_sender(message), what)
        return message

    @classmethod
    def _check_fields(cls, envelope: Envelope) -> None:
        problems = []
        for name, kinds in cls.FIELDS.items():
            if name not in envelope.fields:
                problems.append(f"fields.{name} is missing")
            elif type(envelope.fields[name]) not in kinds:
                problems.append(f"fields.{name} is {_type_name(type(envelope.fields[name]))}")
        if cls.NEEDS_SHAREABLE and envelope.shareable is None:
            problems.append("the shareable is missing")
        if problems:
            raise DecodeError(f"{', '.join(problems)}: {cls._needs()}")

    @classmethod
    def _needs(cls) -> str:
        parts = [f"fields.{name} ({' or '.join(map(_type_name, kinds))})" for name, kinds in cls.FIELDS.items()]
        if cls.NEEDS_SHAREABLE:
            parts.append("a shareable")
        listed = ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else "".join(parts)
        return f"a {cls.KIND.value} needs {listed}"


def _type_name(kind: type) -> str:
    return {"NoneType": "null", "dict": "map"}.get(kind.__name__, kind.__name__)
