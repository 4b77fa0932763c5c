"""The messages of secure aggregation, both ends: what each phase's task carries in its `secagg` header and
what a site answers in its result's DXO (kind COLLECTION), with the checks that turn a wrong one into a
SecAggError naming the phase and the field. They travel as ordinary tasks and results (fl.task, fl.result):
the wire contract is unchanged, only task names and a header are added (docs/architecture.md lists them).

One round, for sites U0 (the live ones when it starts):
  1. ADVERTISE to U0: each site answers with two fresh X25519 public keys, `c` (to seal shares) and `s`
     (to agree masks). Those that answered are U1.
  2. SHARE to U1, with every U1 site's keys: each site Shamir-shares its `s` private key and a fresh self-mask
     seed among U1 (threshold t) and answers with one sealed share pair per other site. Those are U2.
  3. the train task to U2, with the global model and every sealed share: each site opens the shares sealed
     for it, trains, and answers with its masked, quantized, weighted update. Those that arrive are U3.
  4. UNMASK to U3, naming U3 and the dropped U2 - U3: each survivor answers with its shares of the
     survivors' self-mask seeds and of the dropped sites' `s` keys, never both for one site.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fl_broker.errors import SecAggError
from fl_broker.wire.messages import DXO, DataKind, Shareable

ADVERTISE_TASK = "secagg_advertise_keys"
SHARE_TASK = "secagg_share_keys"
UNMASK_TASK = "secagg_unmask"
KEY_TASKS = (ADVERTISE_TASK, SHARE_TASK, UNMASK_TASK)
HEADER = "secagg"  # the task header holding the phase's fields
DATA_KIND_META = "secagg_data_kind"  # meta of a masked update: the kind of the update under the masks


@dataclass(frozen=True)
class PublicKeys:
    """A site's two public keys for one round: `c` seals shares, `s` agrees masks."""

    c: bytes
    s: bytes

    def to_wire(self) -> dict[str, bytes]:
        """As sent: {"c": ..., "s": ...}."""
        return {"c": self.c, "s": self.s}

    @classmethod
    def from_wire(cls, value: Any, where: str) -> PublicKeys:
        """Checked keys from what a message carried at `where`."""
        data = _mapping(value, where)
        keys = cls(c=_bytes(data.get("c"), f"{where}.c", 32), s=_bytes(data.get("s"), f"{where}.s", 32))
        if keys.c == keys.s:
            raise SecAggError(f"{where}: the two public keys are the same key")
        return keys


def header_of(task: Shareable, phase: str) -> dict[str, Any]:
    """The `secagg` header of a task of `phase`, checked to be a map."""
    return _mapping(task.get_header(HEADER), f"{phase} task: header {HEADER!r}")


def sites_of(fields: Mapping[str, Any], key: str, where: str) -> list[str]:
    """A sorted list of distinct site names found under `key`."""
    value = fields.get(key)
    if not isinstance(value, list) or not all(isinstance(site, str) for site in value):
        raise SecAggError(f"{where}.{key}: expected a list of site names, got {value!r:.100}")
    if len(set(value)) != len(value):
        raise SecAggError(f"{where}.{key}: a site is named twice")
    return sorted(value)


def int_of(fields: Mapping[str, Any], key: str, where: str) -> int:
    """An int found under `key`."""
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SecAggError(f"{where}.{key}: expected an int, got {value!r:.100}")
    return value


def bytes_map(value: Any, where: str, size: int | None = None) -> dict[str, bytes]:
    """A map of site name -> bytes (of `size` bytes if given)."""
    return {site: _bytes(item, f"{where}[{site!r}]", size) for site, item in _mapping(value, where).items()}


def collection(data: dict[str, Any], meta: dict[str, Any] | None = None) -> Shareable:
    """A site's answer to a key phase, or its masked update: a COLLECTION DXO."""
    return DXO(data_kind=DataKind.COLLECTION, data=data, meta=dict(meta or {})).to_shareable()


def answer_data(dxo: DXO, phase: str) -> dict[str, Any]:
    """The data of a site's answer, checked to be a COLLECTION."""
    if dxo.data_kind != DataKind.COLLECTION:
        raise SecAggError(f"{phase} answer: data kind {dxo.data_kind.value}, expected COLLECTION")
    return dxo.data


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise SecAggError(f"{where}: expected a map with string keys, got {type(value).__name__}")
    return value


def _bytes(value: Any, where: str, size: int | None = None) -> bytes:
    if not isinstance(value, bytes) or (size is not None and len(value) != size):
        wanted = f"{size} bytes" if size is not None else "bytes"
        raise SecAggError(f"{where}: expected {wanted}, got {type(value).__name__} of length {_length(value)}")
    return value


def _length(value: Any) -> str:
    try:
        return str(len(value))
    except TypeError:
        return "-"


def mask_info(run: int, round: int, first: str, second: str) -> bytes:
    """The HKDF info of the mask seed two sites agree: who (in name order), which run and round."""
    low, high = sorted((first, second))
    return f"fl-broker secagg mask|{run}|{round}|{low}|{high}".encode()


def seal_info(run: int, round: int, first: str, second: str) -> bytes:
    """The HKDF info of the key two sites seal their shares with."""
    low, high = sorted((first, second))
    return f"fl-broker secagg seal|{run}|{round}|{low}|{high}".encode()


def sealed_for(run: int, round: int, sender: str, receiver: str) -> bytes:
    """The associated data of a sealed share: it opens only as `sender`'s share for `receiver` this round."""
    return f"{run}|{round}|{sender}->{receiver}".encode()


def mask_sign(site: str, peer: str) -> int:
    """+1 if `site` adds the pair's mask, -1 if it subtracts it: the lower name adds, so the pair cancels."""
    return 1 if site < peer else -1


def holder_x(sites: list[str], site: str) -> int:
    """The Shamir x of `site` among the round's sorted key holders (1-based)."""
    return sites.index(site) + 1


def effective_threshold(configured: int, sites: int) -> int:
    """The threshold of a round with `sites` key holders: the configured one, but never a minority of the
    sites and never below 2 (the shares of a minority must not be enough)."""
    return max(configured, sites // 2 + 1, 2)
