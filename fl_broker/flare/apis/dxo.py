"""`nvflare.apis.dxo`: FLARE's Data Exchange Object on fl-broker's DXO. `to_bytes`/`from_bytes` go through
fl-broker's msgpack codec (arrays as dtype + shape + bytes), never pickle, so a DXO written by FLARE itself
cannot be read here (and nothing read here can run code)."""

from __future__ import annotations

from fl_broker.wire import messages
from fl_broker.wire.messages import DXO, DataKind, from_shareable

__all__ = ["DXO", "DataKind", "MetaKey", "from_bytes", "from_file", "from_shareable"]


class MetaKey(messages.MetaKey):
    """DXO meta keys: fl-broker's, and the ones FLARE 2.0 adds."""

    MODEL_OWNER = "MODEL_OWNER"
    PROCESSED_ALGORITHM = "PROCESSED_ALGORITHM"
    PROCESSED_KEYS = "PROCESSED_KEYS"


def from_bytes(data: bytes) -> DXO:
    """The DXO whose bytes `DXO.to_bytes` made; ValueError if `data` is not such bytes."""
    return messages.dxo_from_bytes(data)


def from_file(file_path: str) -> DXO:
    """The DXO saved in `file_path` (bytes of `DXO.to_bytes`)."""
    with open(file_path, "rb") as file:
        return from_bytes(file.read())
