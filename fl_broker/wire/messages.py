"""The data model FLARE users know (Shareable, DXO, DataKind, ReturnCode, MetaKey) as small typed classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class DataKind(str, Enum):
    """What a DXO's data means."""

    WEIGHTS = "WEIGHTS"
    WEIGHT_DIFF = "WEIGHT_DIFF"
    METRICS = "METRICS"
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
        _check_str_keys(self.data, "DXO.data")
        _check_str_keys(self.meta, "DXO.meta")

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

    def get_return_code(self) -> ReturnCode:
        """FLARE-style return code accessor."""
        return self.return_code

    def set_return_code(self, rc: ReturnCode) -> None:
        """FLARE-style return code setter."""
        self.return_code = ReturnCode(rc)


def make_reply(rc: ReturnCode) -> Shareable:
    """An empty result carrying only a return code (FLARE's make_reply)."""
    return Shareable(return_code=rc)


def from_shareable(shareable: Shareable) -> DXO:
    """The DXO carried by a Shareable; ValueError if there is none."""
    if shareable.dxo is None:
        raise ValueError("the Shareable carries no DXO")
    return shareable.dxo
