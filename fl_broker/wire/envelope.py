"""The envelope every fl-broker message body carries: its kind, run, fields and an optional Shareable.

On the wire it is `codec.encode` of {"v": 1, "kind": str, "run": int, "fields": map, "shareable": map|None}.
Decoding checks this schema strictly; a DecodeError names the path of what is wrong. Which fields a kind
carries, and their types, is up to its protocol module (`fl_broker.protocol`), which builds and reads
envelopes through its typed messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from fl_broker.errors import DecodeError
from fl_broker.wire import codec
from fl_broker.wire.messages import DXO, DataKind, ReturnCode, Shareable

__all__ = [
    "ENVELOPE_VERSION",
    "Envelope",
    "Kind",
    "decode_envelope",
    "encode_envelope",
    "shareable_from_dict",
    "shareable_to_dict",
]

ENVELOPE_VERSION = 1

_ENVELOPE_KEYS = ("v", "kind", "run", "fields", "shareable")
_SHAREABLE_KEYS = ("task_name", "task_id", "rc", "headers", "cookie_jar", "peer_props", "dxo")
_DXO_KEYS = ("kind", "data", "meta")


class Kind(str, Enum):
    """What a message is; each kind belongs to one protocol module."""

    TASK = "task"  # server -> site (protocol.tasks)
    RESULT = "result"  # site -> server (protocol.tasks)
    REQUEST = "request"  # a control request (protocol.control)
    REPLY = "reply"  # the answer to a request (protocol.control)
    EVENT = "event"  # a lifecycle event of a run (protocol.events)


_KINDS = tuple(kind.value for kind in Kind)


@dataclass
class Envelope:
    """One message: what it is, the run it belongs to, the `fields` its kind defines (str keys) and the
    Shareable it carries, if any."""

    kind: Kind
    run: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
    shareable: Shareable | None = None


def encode_envelope(env: Envelope) -> bytes:
    """The message body for `env`. Raises TypeError/ValueError (naming the path) for unencodable content."""
    return b"".join(encode_envelope_parts(env))


def encode_envelope_parts(env: Envelope) -> list[bytes | memoryview]:
    """The message body for `env` as pieces in order, the arrays not copied (see `codec.encode_parts`)."""
    if env.kind not in _KINDS:
        raise TypeError(f"envelope.kind must be one of {', '.join(_KINDS)}, got {env.kind!r}")
    if type(env.run) is not int:
        raise TypeError(f"envelope.run must be an int, got {type(env.run).__name__}")
    _require_str_keys(env.fields, "envelope.fields", TypeError)
    body = {
        "v": ENVELOPE_VERSION,
        "kind": Kind(env.kind).value,
        "run": env.run,
        "fields": env.fields,
        "shareable": None if env.shareable is None else shareable_to_dict(env.shareable),
    }
    return codec.encode_parts(body, where="envelope")


def decode_envelope(data: bytes | bytearray | memoryview, *, max_size: int | None = None) -> Envelope:
    """Decode and validate a message body. Arrays come back writable (see `codec.decode` for when they
    share memory with `data`). Raises DecodeError naming the path of what is wrong."""
    raw = _exact_keys(codec.decode(data, max_size=max_size), _ENVELOPE_KEYS, "envelope")
    if not (type(raw["v"]) is int and raw["v"] == ENVELOPE_VERSION):
        raise DecodeError(f"envelope.v: expected {ENVELOPE_VERSION}, got {raw['v']!r}")
    kind = _typed(raw["kind"], str, "envelope.kind")
    if not kind:
        raise DecodeError("envelope.kind: must not be empty")
    if kind not in _KINDS:
        raise DecodeError(f"envelope.kind: unknown kind {kind!r}")
    shareable = None if raw["shareable"] is None else shareable_from_dict(raw["shareable"])
    return Envelope(
        kind=Kind(kind),
        run=_typed(raw["run"], int, "envelope.run"),
        fields=_require_str_keys(raw["fields"], "envelope.fields", DecodeError),
        shareable=shareable,
    )


def shareable_to_dict(s: Shareable) -> dict[str, Any]:
    """The plain-map form of a Shareable, as carried in an envelope."""
    dxo = s.dxo
    return {
        "task_name": s.task_name,
        "task_id": s.task_id,
        "rc": ReturnCode(s.return_code).value,
        "headers": s.headers,
        "cookie_jar": s.cookie_jar,
        "peer_props": s.peer_props,
        "dxo": None if dxo is None else {"kind": DataKind(dxo.data_kind).value, "data": dxo.data, "meta": dxo.meta},
    }


def shareable_from_dict(d: Any, where: str = "shareable") -> Shareable:
    """Rebuild a Shareable from its map form; DecodeError names the bad key (e.g. "shareable.dxo.kind")."""
    raw = _exact_keys(d, _SHAREABLE_KEYS, where)
    rc = _typed(raw["rc"], str, f"{where}.rc")
    if rc not in ReturnCode._value2member_map_:
        raise DecodeError(f"{where}.rc: unknown return code {rc!r}")
    return Shareable(
        task_name=_typed(raw["task_name"], str, f"{where}.task_name"),
        task_id=_typed(raw["task_id"], str, f"{where}.task_id"),
        return_code=ReturnCode(rc),
        headers=_require_str_keys(raw["headers"], f"{where}.headers", DecodeError),
        cookie_jar=_require_str_keys(raw["cookie_jar"], f"{where}.cookie_jar", DecodeError),
        peer_props=_require_str_keys(raw["peer_props"], f"{where}.peer_props", DecodeError),
        dxo=None if raw["dxo"] is None else _dxo_from_dict(raw["dxo"], f"{where}.dxo"),
    )


def _dxo_from_dict(d: Any, where: str) -> DXO:
    raw = _exact_keys(d, _DXO_KEYS, where)
    kind = _typed(raw["kind"], str, f"{where}.kind")
    if kind not in DataKind._value2member_map_:
        raise DecodeError(f"{where}.kind: unknown data kind {kind!r}")
    return DXO(
        data_kind=DataKind(kind),
        data=_require_str_keys(raw["data"], f"{where}.data", DecodeError),
        meta=_require_str_keys(raw["meta"], f"{where}.meta", DecodeError),
    )


def _exact_keys(value: Any, keys: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(f"{where}: expected a map, got {type(value).__name__}")
    missing = [key for key in keys if key not in value]
    if missing:
        raise DecodeError(f"{where}: missing key(s) {', '.join(map(repr, missing))}")
    extra = [key for key in value if key not in keys]
    if extra:
        raise DecodeError(f"{where}: unexpected key(s) {', '.join(map(repr, extra))}")
    return value


def _typed(value: Any, kind: type, where: str) -> Any:
    # `type(...) is` on purpose: bool is an int subclass but never a valid run number.
    if type(value) is not kind:
        raise DecodeError(f"{where}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _require_str_keys(value: Any, where: str, error: type[Exception]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise error(f"{where}: expected a map, got {type(value).__name__}")
    for key in value:
        if type(key) is not str:
            raise error(f"{where}: keys must be str, got {key!r}")
    return value
