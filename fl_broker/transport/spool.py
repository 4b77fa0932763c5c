"""A disk spool for chunk streams, independent of any broker.

A consumer that holds every chunk unacked until its stream is complete can deadlock: once its prefetch
window is full of partial streams (many senders' uploads interleave in one queue, or one sender never
finishes), no stream can complete. With a spool, each chunk is written to a file and only then acked, so the
prefetch window never fills with partial streams and a body costs disk, not memory. A complete body is handed
over as a private (copy-on-write) memory map of its file, so decoding it copies nothing; its files are removed
once the handler settles it. A crash loses nothing: chunks not yet written are redelivered by the broker, a
partial stream on disk continues where it stopped, and a complete body not yet settled is handed over again
at the next start.

Files per stream, in the spool directory: `<stream>.data` (the bytes so far) and `<stream>.meta` (msgpack:
state, the first chunk's properties, sender, count, total, next index, bytes written). `.meta` is replaced
atomically after each chunk's bytes are written, so it never claims bytes that are not in `.data`.
"""

from __future__ import annotations

import functools
import logging
import mmap
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from fl_broker.transport.chunking import ChunkError, Pieces, check_first, check_next, read_headers

log = logging.getLogger(__name__)

GiB = 1024**3
_TOMBSTONE_SECONDS = 3600.0  # a finished stream is remembered this long, to drop a redelivered last chunk
_REFUSED_MEMORY = 1024  # refused streams remembered, so their later chunks are dropped without more noise
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # stream ids become file names: nothing else gets near the disk
_RECORD_KEYS = ("properties", "sender", "count", "total", "next_index", "filled")


@dataclass(frozen=True)
class SpoolOptions:
    """Where and within which bounds a subscription spools chunk streams."""

    directory: Path
    stream_timeout: float = 300.0  # a partial stream with no new chunk for this long is dropped
    max_streams: int = 256  # partial streams at once, all senders together
    max_streams_per_sender: int = 4  # partial streams of one sender (login + client name) at once
    max_bytes_per_sender: int = 4 * GiB  # bytes of one sender's partial streams on disk


@dataclass
class SpooledBody:
    """A complete body: its first chunk's properties and a writable, zero-copy view of its bytes."""

    stream_id: str
    properties: dict[str, Any]
    body: memoryview | bytearray
    recovered: bool = False  # found on disk at start-up (a previous consumer did not settle it)


def release_pages(body: object) -> bool:
    """Drop the resident pages of a spooled body's map; True if `body` is one. They are read again from the
    page cache when next touched, so a decoded result waiting in a queue costs no memory: decoding touches
    only its head, but the kernel maps a whole large folio (2 MiB here) for it, and with many results
    queued that added up. Only while nothing has written to the body: a private map's written pages would
    go with the rest."""
    target = body.obj if isinstance(body, memoryview) else None
    if not isinstance(target, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return False
    target.madvise(mmap.MADV_DONTNEED)
    return True


F = TypeVar("F", bound=Callable[..., Any])


def _locked(method: F) -> F:
    """Run the method under the spool's lock (the dispatch thread adds, a settling thread finishes)."""

    @functools.wraps(method)
    def locked(self: ChunkSpool, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]


@dataclass
class _Stream:
    meta: dict[str, Any]
    fd: int | None = None
    touched: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Expired:
    """A partial stream dropped for being idle too long, for the caller to report."""

    stream_id: str
    properties: dict[str, Any]
    reason: str


class ChunkSpool:
    """The spool of one subscription: its dispatch thread adds chunks, whoever settles a body finishes it."""

    WRITTEN, DUPLICATE, DROPPED = "written", "duplicate", "dropped"

    def __init__(self, options: SpoolOptions, max_body_size: int) -> None:
        self.options = options
        self.max_body_size = max_body_size
        self.directory = Path(options.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._streams: dict[str, _Stream] = {}
        self._finished: dict[str, float] = {}  # stream id -> when (wall clock), see _TOMBSTONE_SECONDS
        self._refused: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.RLock()

    # -- start-up --------------------------------------------------------------------------------------
    @_locked
    def recover(self) -> list[SpooledBody]:
        """Reload what a previous consumer left: partial streams continue; complete bodies are returned."""
        complete = []
        for tmp in self.directory.glob("*.meta.tmp"):
            tmp.unlink(missing_ok=True)
        for meta_path in sorted(self.directory.glob("*.meta")):
            stream_id = meta_path.stem
            meta = self._read_meta(meta_path)
            if meta is None:
                self._remove(stream_id)
                continue
            if meta["state"] == "finished":
                self._finished[stream_id] = float(meta.get("finished_at", 0.0))
            elif meta["state"] == "complete":
                self._streams[stream_id] = _Stream(meta)
                complete.append(self._map(stream_id, recovered=True))
            else:
                self._reopen_partial(stream_id, meta)
        for data in self.directory.glob("*.data"):
            if data.stem not in self._streams:
                data.unlink(missing_ok=True)  # bytes whose .meta never got written
        self._prune_tombstones()
        if complete or self._streams:
            log.info(
                "spool %s: %d complete bodies and %d partial streams recovered",
                self.directory,
                len(complete),
                len(self._streams) - len(complete),
            )
        return complete

    # -- chunks ----------------------------------------------------------------------------------------
    @_locked
    def add(
        self,
        headers: dict[str, Any],
        data: bytes | bytearray | memoryview | Pieces,
        sender: str,
        properties: Callable[[], dict[str, Any]],
    ) -> tuple[str, SpooledBody | None]:
        """Write one chunk. Returns (WRITTEN, None), (WRITTEN, body) when it completed its stream, or
        (DUPLICATE|DROPPED, None) for a chunk already written or of a refused stream: ack those and move on.
        Raises ChunkError (and removes the stream) for a chunk that does not fit its stream."""
        stream_id, index, count, total = read_headers(headers)
        if not _SAFE_ID.fullmatch(stream_id):
            raise ChunkError(f"chunk stream id {stream_id[:80]!r} is not a plain identifier")
        if stream_id in self._refused:
            return self.DROPPED, None
        if stream_id in self._finished:
            return self.DUPLICATE, None
        stream = self._streams.get(stream_id)
        try:
            if stream is None:
                stream = self._open(stream_id, index, count, total, sender, properties)
            meta = stream.meta
            if index < meta["next_index"]:
                return self.DUPLICATE, None  # written before a crash or reconnect, then redelivered
            check_next(stream_id, meta["next_index"], meta["count"], meta["total"], index, count, total)
            self._check_room(stream_id, meta, len(data))
        except ChunkError:
            self._refuse(stream_id)
            raise
        self._write(stream_id, stream, data)
        if meta["next_index"] < meta["count"]:
            return self.WRITTEN, None
        if meta["filled"] != meta["total"]:
            self._refuse(stream_id)
            raise ChunkError(f"chunk stream {stream_id}: got {meta['filled']} bytes of {meta['total']}", stream_id)
        self._complete(stream_id, stream)
        return self.WRITTEN, self._map(stream_id, recovered=False)

    @_locked
    def finish(self, stream_id: str) -> None:
        """The handler settled this body: remove its bytes, remember the id for a while."""
        self._streams.pop(stream_id, None)
        now = time.time()
        self._finished[stream_id] = now
        (self.directory / f"{stream_id}.data").unlink(missing_ok=True)
        self._write_meta(stream_id, {"v": 1, "state": "finished", "finished_at": now})

    @_locked
    def expire(self) -> list[Expired]:
        """Drop partial streams idle for longer than the stream timeout; return them for reporting."""
        cutoff = time.monotonic() - self.options.stream_timeout
        expired = []
        for stream_id, stream in list(self._streams.items()):
            meta = stream.meta
            if meta["state"] != "partial" or stream.touched >= cutoff:
                continue
            reason = (
                f"chunk stream {stream_id} from {meta['sender'] or 'an unnamed sender'} expired: "
                f"{meta['next_index']} of {meta['count']} chunks ({meta['filled']} of {meta['total']} bytes) "
                f"and no chunk for {self.options.stream_timeout:.0f} s"
            )
            self._refuse(stream_id)
            expired.append(Expired(stream_id, dict(meta["properties"]), reason))
        self._prune_tombstones()
        return expired

    @_locked
    def close(self) -> None:
        """Close open files; everything on disk stays for the next start."""
        for stream in self._streams.values():
            if stream.fd is not None:
                os.close(stream.fd)
                stream.fd = None

    @property
    def partial_streams(self) -> list[str]:
        """Ids of partial streams, for tests and logs."""
        return [sid for sid, s in self._streams.items() if s.meta["state"] == "partial"]

    # -- internals -------------------------------------------------------------------------------------
    def _open(
        self,
        stream_id: str,
        index: int,
        count: int,
        total: int,
        sender: str,
        properties: Callable[[], dict[str, Any]],
    ) -> _Stream:
        check_first(stream_id, index, total, self.max_body_size)
        partial = sum(s.meta["state"] == "partial" for s in self._streams.values())
        if partial >= self.options.max_streams:
            raise ChunkError(
                f"chunk stream {stream_id}: too many partial streams (limit {self.options.max_streams})", stream_id
            )
        mine = [s for s in self._streams.values() if s.meta["sender"] == sender and s.meta["state"] == "partial"]
        if len(mine) >= self.options.max_streams_per_sender:
            raise ChunkError(
                f"chunk stream {stream_id}: {sender or 'the sender'} already has "
                f"{self.options.max_streams_per_sender} partial streams",
                stream_id,
            )
        meta = {
            "v": 1,
            "state": "partial",
            "properties": properties(),
            "sender": sender,
            "count": count,
            "total": total,
            "next_index": 0,
            "filled": 0,
        }
        fd = os.open(self.directory / f"{stream_id}.data", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        stream = _Stream(meta, fd)
        self._streams[stream_id] = stream
        return stream

    def _check_room(self, stream_id: str, meta: dict[str, Any], size: int) -> None:
        if meta["filled"] + size > meta["total"]:
            raise ChunkError(
                f"chunk stream {stream_id}: chunk overruns the declared total of {meta['total']} bytes", stream_id
            )
        sender = meta["sender"]
        held = sum(
            s.meta["filled"]
            for s in self._streams.values()
            if s.meta["sender"] == sender and s.meta["state"] == "partial"
        )
        if held + size > self.options.max_bytes_per_sender:
            raise ChunkError(
                f"chunk stream {stream_id}: {sender or 'the sender'} would hold more than "
                f"{self.options.max_bytes_per_sender} bytes of partial streams",
                stream_id,
            )

    def _write(self, stream_id: str, stream: _Stream, data: bytes | bytearray | memoryview | Pieces) -> None:
        assert stream.fd is not None
        parts = data.parts if isinstance(data, Pieces) else [memoryview(data).cast("B")]
        stream.meta["filled"] = write_all(stream.fd, parts, stream.meta["filled"])
        stream.meta["next_index"] += 1
        stream.touched = time.monotonic()
        self._write_meta(stream_id, stream.meta)

    def _complete(self, stream_id: str, stream: _Stream) -> None:
        assert stream.fd is not None
        # No fsync: a process crash keeps what was written (the page cache outlives the process), and after
        # a machine crash the resumed round sends its task again, so a lost result is trained and sent anew.
        # Measured here: fdatasync cost ~20 ms per 40 MB result, in line with every result of every round.
        os.close(stream.fd)
        stream.fd = None
        stream.meta["state"] = "complete"
        self._write_meta(stream_id, stream.meta)

    def _map(self, stream_id: str, *, recovered: bool) -> SpooledBody:
        meta = self._streams[stream_id].meta
        body: memoryview | bytearray = bytearray()
        if meta["total"]:
            with open(self.directory / f"{stream_id}.data", "rb") as file:
                # ACCESS_COPY: writable and private, so the codec decodes without copying and nothing
                # written to the arrays reaches the file. The map lives as long as views of it do.
                body = memoryview(mmap.mmap(file.fileno(), meta["total"], access=mmap.ACCESS_COPY))
        return SpooledBody(stream_id, dict(meta["properties"]), body, recovered)

    def _reopen_partial(self, stream_id: str, meta: dict[str, Any]) -> None:
        path = self.directory / f"{stream_id}.data"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            self._remove(stream_id)
            return
        os.ftruncate(fd, meta["filled"])  # bytes written after the last .meta are written again
        self._streams[stream_id] = _Stream(meta, fd)

    def _refuse(self, stream_id: str) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None and stream.fd is not None:
            os.close(stream.fd)
        self._remove(stream_id)
        self._refused[stream_id] = None
        while len(self._refused) > _REFUSED_MEMORY:
            self._refused.popitem(last=False)

    def _remove(self, stream_id: str) -> None:
        for suffix in (".data", ".meta"):
            (self.directory / f"{stream_id}{suffix}").unlink(missing_ok=True)

    def _prune_tombstones(self) -> None:
        cutoff = time.time() - _TOMBSTONE_SECONDS
        for stream_id, when in list(self._finished.items()):
            if when < cutoff:
                del self._finished[stream_id]
                self._remove(stream_id)

    def _write_meta(self, stream_id: str, meta: dict[str, Any]) -> None:
        path = self.directory / f"{stream_id}.meta"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(msgpack.packb(meta, default=str))
        os.replace(tmp, path)

    @staticmethod
    def _read_meta(path: Path) -> dict[str, Any] | None:
        try:
            meta = msgpack.unpackb(path.read_bytes())
        except (OSError, ValueError, msgpack.ExtraData) as exc:
            log.warning("spool: ignoring unreadable %s: %s", path, exc)
            return None
        state = meta.get("state") if isinstance(meta, dict) else None
        if state not in ("partial", "complete", "finished") or (
            state != "finished" and not all(key in meta for key in _RECORD_KEYS)
        ):
            log.warning("spool: ignoring %s: not a spool record", path)
            return None
        return meta


_IOV_MAX = 1024  # buffers per pwritev call (Linux's IOV_MAX)


def write_all(fd: int, parts: list[memoryview], offset: int) -> int:
    """Write `parts` (byte views, in order) at `offset` of `fd` with as few system calls as the kernel
    allows (one pwritev for a chunk's frames, so they are never joined in memory); the offset after them."""
    pending = [part for part in parts if part.nbytes]
    while pending:
        written = os.pwritev(fd, pending[:_IOV_MAX], offset)
        offset += written
        while pending and written >= pending[0].nbytes:  # drop what is written, keep the rest of a part
            written -= pending.pop(0).nbytes
        if written:
            pending[0] = pending[0][written:]
    return offset
