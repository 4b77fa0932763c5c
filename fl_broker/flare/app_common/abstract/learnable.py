"""`nvflare.app_common.abstract.learnable`: a Learnable is a dict; its bytes go through fl-broker's codec."""

from __future__ import annotations

from typing import Any

from fl_broker.wire import codec


class Learnable(dict[str, Any]):
    """Something that is learned (a model): a dict of str keys."""

    def is_empty(self) -> bool:
        """Whether there is nothing in it to learn from (a plain Learnable never is)."""
        return False

    def to_bytes(self) -> bytes:
        """The learnable as codec bytes (numpy arrays, numbers, strings, lists and dicts; never pickle)."""
        return codec.encode(dict(self), where=type(self).__name__)

    @classmethod
    def from_bytes(cls, data: bytes) -> Learnable:
        """The learnable `to_bytes` wrote; ValueError if `data` is not one."""
        decoded = codec.decode(data)
        if not isinstance(decoded, dict):
            raise ValueError(f"not the bytes of a {cls.__name__}: a {type(decoded).__name__}")
        return cls(decoded)
