"""The data model FLARE users know (Shareable, DXO, DataKind, ReturnCode, MetaKey) as small typed classes."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from fl_broker.errors import DecodeError
from fl_broker.wire import codec

_DXO_BYTES = "fl_broker_dxo"  # marks the map DXO.to_bytes writes


class DataKind(str, Enum):
    """What a DXO's data means."""

    WEIGHTS = "WEIGHTS"
    WEIGHT_DIFF = "WEIGHT_DIFF"
    METRICS = "METRICS"
    MODEL = "MODEL"
    ANALYTIC = "ANALYTIC"
    COLLECTION = "COLLECTION"
    STATISTICS = "STATISTICS"
    NONE = "NONE"


class ReturnCode(str, Enum):
    """Outcome of a task, carried in a result Shareable. Each value equals its name, as in FLARE."""

    OK = "OK"
    ERROR = "ERROR"
    BAD_TASK_DATA = "BAD_TASK_DATA"
    BAD_REQUEST_DATA = "BAD_REQUEST_DATA"
    EXECUTION_EXCEPTION = "EXECUTION_EXCEPTION"
    EXECUTION_RESULT_ERROR = "EXECUTION_RESULT_ERROR"
    TASK_UNKNOWN = "TASK_UNKNOWN"
    TASK_ABORTED = "TASK_ABORTED"
    TASK_DATA_FILTER_ERROR = "TASK_DATA_FILTER_ERROR"
    TASK_RESULT_FILTER_ERROR = "TASK_RESULT_FILTER_ERROR"
    EMPTY_RESULT = "EMPTY_RESULT"
    COMMUNICATION_ERROR = "COMMUNICATION_ERROR"
    TIMEOUT = "TIMEOUT"
    RUN_MISMATCH = "RUN_MISMATCH"
    SERVER_NOT_READY = "SERVER_NOT_READY"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    MISSING_PEER_CONTEXT = "MISSING_PEER_CONTEXT"
    BAD_PEER_CONTEXT = "BAD_PEER_CONTEXT"
    UNSAFE_JOB = "UNSAFE_JOB"
    HANDLER_EXCEPTION = "HANDLER_EXCEPTION"
    TASK_UNSUPPORTED = "TASK_UNSUPPORTED"
    TOPIC_UNKNOWN = "TOPIC_UNKNOWN"
    MODEL_UNRECOGNIZED = "MODEL_UNRECOGNIZED"
    VALIDATE_TYPE_UNKNOWN = "VALIDATE_TYPE_UNKNOWN"


class MetaKey:
    """Well-known keys of DXO meta."""

    NUM_STEPS_CURRENT_ROUND = "NUM_STEPS_CURRENT_ROUND"
    INITIAL_METRICS = "initial_metrics"
    CURRENT_ROUND = "current_round"
    # fl-broker's own: a result's training/validation metrics, a dict of name -> number
    METRICS = "metrics"


class Header:
    """Well-known Shareable header names (FLARE's spelling)."""

    CURRENT_ROUND = "current_round"
    NUM_ROUNDS = "num_rounds"
    CONTRIBUTION_ROUND = "contribution_round"  # cookie
    # fl-broker's own: why a task failed, for people (e.g. the filter that refused it)
    ERROR_REASON = "error_reason"


def _check_str_keys(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be a dict, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"{what} keys must be str, got {key!r}")
    return value


@dataclass
class DXO:
    """Data Exchange Object: a kind, a dict of arrays/scalars, and meta."""

    data_kind: DataKind
    data: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_kind = DataKind(self.data_kind)
        # FLARE's DXO takes None for "nothing"; an empty dict is what it means.
        self.data = {} if self.data is None else self.data
        self.meta = {} if self.meta is None else self.meta
        _check_str_keys(self.data, "DXO.data")
        _check_str_keys(self.meta, "DXO.meta")

    def validate(self) -> str:
        """What is wrong with this DXO ("" when nothing is): FLARE's DXO.validate."""
        if not isinstance(self.data, dict):
            return f"invalid data: expected a dict, got {type(self.data).__name__}"
        if not isinstance(self.meta, dict):
            return f"invalid meta: expected a dict, got {type(self.meta).__name__}"
        return ""

    def get_meta_props(self) -> dict[str, Any]:
        """All of the meta (the dict itself)."""
        return self.meta

    def update_meta_props(self, meta: dict[str, Any]) -> None:
        """Copy every key of `meta` into this DXO's meta."""
        self.meta.update(copy.deepcopy(meta))

    def remove_meta_props(self, keys: list[str]) -> None:
        """Drop these meta keys (missing ones are ignored)."""
        for key in keys:
            self.meta.pop(key, None)

    def update_shareable(self, shareable: Shareable) -> Shareable:
        """Put this DXO into `shareable` (replacing any it had) and return it."""
        shareable.dxo = self
        return shareable

    def to_bytes(self) -> bytes:
        """This DXO as bytes, through fl-broker's codec (never pickle); `dxo_from_bytes` reads them back."""
        return codec.encode({_DXO_BYTES: 1, "kind": self.data_kind.value, "data": self.data, "meta": self.meta})

    def get_meta_prop(self, key: str, default: Any = None) -> Any:
        """FLARE-style accessor for one meta value."""
        return self.meta.get(key, default)

    def set_meta_prop(self, key: str, value: Any) -> None:
        """FLARE-style setter for one meta value."""
        self.meta[key] = value

    def to_shareable(self) -> Shareable:
        """Wrap this DXO into a new Shareable."""
        return Shareable(dxo=self)


@dataclass
class Shareable:
    """What travels between server and clients: headers, a return code, cookies and an optional DXO."""

    task_name: str = ""
    task_id: str = ""
    return_code: ReturnCode = ReturnCode.OK
    headers: dict[str, Any] = field(default_factory=dict)
    cookie_jar: dict[str, Any] = field(default_factory=dict)
    peer_props: dict[str, Any] = field(default_factory=dict)
    dxo: DXO | None = None

    def __post_init__(self) -> None:
        self.return_code = ReturnCode(self.return_code)
        for name in ("task_name", "task_id"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"Shareable.{name} must be str")
        _check_str_keys(self.headers, "Shareable.headers")
        _check_str_keys(self.cookie_jar, "Shareable.cookie_jar")
        _check_str_keys(self.peer_props, "Shareable.peer_props")
        if self.dxo is not None and not isinstance(self.dxo, DXO):
            raise TypeError(f"Shareable.dxo must be a DXO, got {type(self.dxo).__name__}")

    def get_header(self, key: str, default: Any = None) -> Any:
        """FLARE-style header accessor."""
        return self.headers.get(key, default)

    def set_header(self, key: str, value: Any) -> None:
        """FLARE-style header setter."""
        self.headers[key] = value

    def get_return_code(self, default: Any = ReturnCode.OK) -> ReturnCode:
        """FLARE-style return code accessor (a Shareable always has one, so `default` is never used)."""
        return self.return_code

    def set_return_code(self, rc: ReturnCode) -> None:
        """FLARE-style return code setter."""
        self.return_code = ReturnCode(rc)

    def add_cookie(self, name: str, data: Any) -> None:
        """Set a cookie: the site echoes the cookie jar back in its result."""
        self.cookie_jar[name] = data

    def get_cookie(self, name: str, default: Any = None) -> Any:
        """One cookie's value."""
        return self.cookie_jar.get(name, default)

    def get_cookie_jar(self) -> dict[str, Any]:
        """All cookies."""
        return self.cookie_jar

    def set_cookie_jar(self, jar: dict[str, Any]) -> None:
        """Replace the cookies."""
        self.cookie_jar = _check_str_keys(jar, "Shareable.cookie_jar")

    def get_peer_props(self) -> dict[str, Any]:
        """The sender's public properties."""
        return self.peer_props

    def set_peer_props(self, props: dict[str, Any]) -> None:
        """Replace the sender's public properties."""
        self.peer_props = _check_str_keys(props, "Shareable.peer_props")

    def get_peer_prop(self, key: str, default: Any = None) -> Any:
        """One of the sender's public properties."""
        return self.peer_props.get(key, default)


def make_reply(rc: ReturnCode) -> Shareable:
    """An empty result carrying only a return code (FLARE's make_reply)."""
    return Shareable(return_code=rc)


def dxo_from_bytes(raw: bytes | bytearray | memoryview) -> DXO:
    """The DXO that `DXO.to_bytes` wrote; ValueError if `raw` is not one."""
    try:
        decoded = codec.decode(raw)
    except DecodeError as exc:
        raise ValueError(f"not the bytes of a DXO: {exc}") from exc
    if not isinstance(decoded, dict) or decoded.get(_DXO_BYTES) != 1:
        raise ValueError("not the bytes of a DXO (DXO.to_bytes writes them)")
    try:
        data, meta = decoded.get("data"), decoded.get("meta")
        if not isinstance(data, dict) or not isinstance(meta, dict):
            raise ValueError("data and meta must be maps")
        return DXO(data_kind=DataKind(decoded.get("kind")), data=data, meta=meta)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not the bytes of a valid DXO: {exc}") from exc


def from_shareable(shareable: Shareable) -> DXO:
    """The DXO carried by a Shareable; ValueError if there is none."""
    if shareable.dxo is None:
        raise ValueError("the Shareable carries no DXO")
    return shareable.dxo
