"""Ordered chunking of large bodies, independent of any broker.

A body above the chunk size travels as `count` messages that share a stream id; each carries its index and
the total size, so the receiver can check that the stream adds up. Chunks
of one stream must arrive in order (one queue, one publisher, confirms): anything else is a transport-level
error and the stream is abandoned.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fl_broker.errors import ChunkError

STREAM_HEADER = "x-fl-chunk-stream"
INDEX_HEADER = "x-fl-chunk-index"
COUNT_HEADER = "x-fl-chunk-count"
TOTAL_HEADER = "x-fl-chunk-total"
CHUNK_HEADERS = (STREAM_HEADER, INDEX_HEADER, COUNT_HEADER, TOTAL_HEADER)


def is_chunk(headers: dict[str, Any] | None) -> bool:
    """Whether a message's headers mark it as one chunk of a stream."""
    return bool(headers) and any(name in headers for name in CHUNK_HEADERS)  # type: ignore[operator]


class Pieces:
    """A body given as buffers in order (an encoder's header, then arrays' own bytes). A transport sends it
    chunk by chunk without ever joining it, so publishing a model-sized message costs one chunk of memory,
    not a second copy of the model. The buffers must not change until the publish returns."""

    def __init__(self, parts: Iterable[bytes | bytearray | memoryview]) -> None:
        self.parts = [memoryview(part).cast("B") for part in parts]
        self.nbytes = sum(part.nbytes for part in self.parts)

    def __len__(self) -> int:
        return self.nbytes

    def read(self, start: int, stop: int) -> bytes:
        """Bytes `start`..`stop` of the body, copied once."""
        return b"".join(self.views(start, stop))

    def slice(self, start: int, stop: int) -> Pieces:
        """Bytes `start`..`stop` of the body as Pieces: views of these parts, nothing copied."""
        return Pieces(self.views(start, stop))

    def views(self, start: int, stop: int) -> list[memoryview]:
        """Views of the parts that together make bytes `start`..`stop` of the body, in order."""
        slices, offset = [], 0
        for part in self.parts:
            end = offset + part.nbytes
            if end > start and offset < stop:
                slices.append(part[max(start - offset, 0) : min(stop - offset, part.nbytes)])
            offset = end
        return slices


Body = bytes | bytearray | memoryview | Pieces


def whole(body: Body) -> bytes:
    """The body as one `bytes` (copied unless it is one already)."""
    if isinstance(body, Pieces):
        return body.read(0, body.nbytes)
    return body if isinstance(body, bytes) else bytes(body)


def split(body: Body, chunk_size: int) -> list[tuple[dict[str, Any], memoryview | Pieces]]:
    """Cut `body` into (chunk headers, bytes) pairs of at most `chunk_size` bytes each (see `iter_chunks`)."""
    return list(iter_chunks(body, chunk_size))


def iter_chunks(body: Body, chunk_size: int) -> Iterator[tuple[dict[str, Any], memoryview | Pieces]]:
    """The chunks of `body`, one at a time, none of them copied: views of a contiguous body, `Pieces`
    (views of its parts) of a `Pieces` body."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    view = body if isinstance(body, Pieces) else memoryview(body).cast("B")
    total = len(view)
    count = max(1, -(-total // chunk_size))
    stream = uuid.uuid4().hex
    for i in range(count):
        start, stop = i * chunk_size, min((i + 1) * chunk_size, total)
        data = view.slice(start, stop) if isinstance(view, Pieces) else view[start:stop]
        yield {STREAM_HEADER: stream, INDEX_HEADER: i, COUNT_HEADER: count, TOTAL_HEADER: total}, data


@dataclass
class _Stream:
    buffer: bytearray
    count: int
    total: int
    sender: str
    touched: float = field(default_factory=time.monotonic)
    next_index: int = 0


class Reassembler:
    """Rebuilds chunk streams into whole bodies in memory, holding at most `max_streams` partial streams (and
    `max_streams_per_sender` of one sender). Memory is taken as chunks arrive, never from the size a first
    chunk announces, so a forged header reserves nothing."""

    def __init__(self, max_body_size: int, max_streams: int = 8, max_streams_per_sender: int | None = None) -> None:
        self.max_body_size = max_body_size
        self.max_streams = max_streams
        self.max_streams_per_sender = max_streams_per_sender or max_streams
        self._streams: dict[str, _Stream] = {}

    @property
    def open_streams(self) -> list[str]:
        """Ids of partial streams, oldest first."""
        return list(self._streams)

    def add(
        self, headers: dict[str, Any], data: bytes | bytearray | memoryview | Pieces, sender: str = ""
    ) -> bytearray | None:
        """Take the next chunk (one buffer, or `Pieces`: the frames it arrived in, copied straight into the
        stream's buffer); return the whole body (writable) once its last chunk arrived, else None. Raises
        ChunkError (and forgets the stream) if the chunk is malformed or out of place."""
        stream_id, index, count, total = read_headers(headers)
        stream = self._streams.get(stream_id)
        try:
            if stream is None:
                stream = self._open(stream_id, index, count, total, sender)
            check_next(stream_id, stream.next_index, stream.count, stream.total, index, count, total)
            if len(stream.buffer) + len(data) > total:
                raise ChunkError(f"chunk stream {stream_id}, index {index}: overruns the declared total", stream_id)
        except ChunkError as exc:
            if stream is not None:
                exc.partial = memoryview(stream.buffer)
            self._streams.pop(stream_id, None)
            raise
        for part in data.parts if isinstance(data, Pieces) else (data,):
            stream.buffer += part
        stream.next_index += 1
        stream.touched = time.monotonic()
        if stream.next_index < stream.count:
            return None
        del self._streams[stream_id]
        if len(stream.buffer) != total:
            raise ChunkError(f"chunk stream {stream_id}: got {len(stream.buffer)} bytes of {total}", stream_id)
        return stream.buffer

    def idle(self, seconds: float) -> list[str]:
        """Ids of partial streams that got no chunk for `seconds`, oldest first."""
        cutoff = time.monotonic() - seconds
        return [stream_id for stream_id, stream in self._streams.items() if stream.touched < cutoff]

    def partial(self, stream_id: str) -> memoryview:
        """The bytes received so far of a partial stream (empty if unknown)."""
        stream = self._streams.get(stream_id)
        return memoryview(stream.buffer) if stream is not None else memoryview(b"")

    def discard(self, stream_id: str) -> None:
        """Forget a partial stream (e.g. it was evicted or its connection went away)."""
        self._streams.pop(stream_id, None)

    def clear(self) -> None:
        """Forget every partial stream."""
        self._streams.clear()

    def _open(self, stream_id: str, index: int, count: int, total: int, sender: str) -> _Stream:
        check_first(stream_id, index, total, self.max_body_size)
        if len(self._streams) >= self.max_streams:
            raise ChunkError(
                f"chunk stream {stream_id}: too many partial streams (limit {self.max_streams})", stream_id
            )
        if sum(s.sender == sender for s in self._streams.values()) >= self.max_streams_per_sender:
            raise ChunkError(
                f"chunk stream {stream_id}: {sender or 'the sender'} already has {self.max_streams_per_sender} "
                "partial streams",
                stream_id,
            )
        stream = _Stream(bytearray(), count, total, sender)
        self._streams[stream_id] = stream
        return stream


def check_first(stream_id: str, index: int, total: int, max_body_size: int) -> None:
    """Raise ChunkError unless (index, total) can open a new stream."""
    if index != 0:
        raise ChunkError(f"chunk stream {stream_id}: starts at index {index}, chunk 0 missing", stream_id)
    if total > max_body_size:
        raise ChunkError(
            f"chunk stream {stream_id}: declared total {total} bytes is over the limit of {max_body_size}",
            stream_id,
        )


def check_next(
    stream_id: str, next_index: int, stream_count: int, stream_total: int, index: int, count: int, total: int
) -> None:
    """Raise ChunkError unless the chunk (index, count, total) is the next one of its stream."""
    where = f"chunk stream {stream_id}, index {index}"
    if index < next_index:
        raise ChunkError(f"{where}: duplicated chunk (expected index {next_index})", stream_id)
    if index > next_index:
        raise ChunkError(f"{where}: chunk {next_index} missing or out of order", stream_id)
    if count != stream_count or total != stream_total:
        raise ChunkError(
            f"{where}: count/total {count}/{total} differ from the stream's {stream_count}/{stream_total}", stream_id
        )


def read_headers(headers: dict[str, Any]) -> tuple[str, int, int, int]:
    """(stream id, index, count, total) of a chunk; ChunkError if they are missing or inconsistent."""
    stream_id = headers.get(STREAM_HEADER)
    if isinstance(stream_id, bytes):
        stream_id = stream_id.decode("utf-8", "replace")
    if not isinstance(stream_id, str) or not stream_id:
        raise ChunkError(f"chunk without a valid {STREAM_HEADER} header: {stream_id!r}")
    values = [headers.get(name) for name in (INDEX_HEADER, COUNT_HEADER, TOTAL_HEADER)]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ChunkError(f"chunk stream {stream_id}: bad index/count/total headers {values!r}", stream_id)
    index, count, total = (int(v) for v in values)  # type: ignore[arg-type]
    if count < 1 or index >= count:
        raise ChunkError(f"chunk stream {stream_id}, index {index}: index not below count {count}", stream_id)
    return stream_id, index, count, total
