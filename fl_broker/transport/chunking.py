"""Ordered chunking of large bodies, independent of any broker.

A body above the chunk size travels as `count` messages that share a stream id; each carries its index and
the total size, so the receiver can preallocate the whole body once and copy each chunk into place. Chunks
of one stream must arrive in order (one queue, one publisher, confirms): anything else is a transport-level
error and the stream is abandoned.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
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


def split(body: bytes | bytearray | memoryview, chunk_size: int) -> list[tuple[dict[str, Any], memoryview]]:
    """Cut `body` into (chunk headers, zero-copy view) pairs of at most `chunk_size` bytes each."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    view = memoryview(body).cast("B")
    total = len(view)
    count = max(1, -(-total // chunk_size))
    stream = uuid.uuid4().hex
    return [
        (
            {STREAM_HEADER: stream, INDEX_HEADER: i, COUNT_HEADER: count, TOTAL_HEADER: total},
            view[i * chunk_size : (i + 1) * chunk_size],
        )
        for i in range(count)
    ]


@dataclass
class _Stream:
    buffer: bytearray
    count: int
    next_index: int = 0
    filled: int = 0


class Reassembler:
    """Rebuilds chunk streams into whole bodies, holding at most `max_streams` partial streams."""

    def __init__(self, max_body_size: int, max_streams: int = 8) -> None:
        self.max_body_size = max_body_size
        self.max_streams = max_streams
        self._streams: dict[str, _Stream] = {}

    @property
    def open_streams(self) -> list[str]:
        """Ids of partial streams, oldest first."""
        return list(self._streams)

    def add(self, headers: dict[str, Any], data: bytes | bytearray | memoryview) -> bytearray | None:
        """Take the next chunk; return the whole body (writable) once its last chunk arrived, else None.
        Raises ChunkError (and forgets the stream) if the chunk is malformed or out of place."""
        stream_id, index, count, total = _read_headers(headers)
        stream = self._streams.get(stream_id)
        try:
            if stream is None:
                stream = self._open(stream_id, index, count, total)
            self._check(stream_id, stream, index, count, total, len(data))
        except ChunkError as exc:
            if stream is not None:
                exc.partial = memoryview(stream.buffer)[: stream.filled]
            self._streams.pop(stream_id, None)
            raise
        stream.buffer[stream.filled : stream.filled + len(data)] = data
        stream.filled += len(data)
        stream.next_index += 1
        if stream.next_index < stream.count:
            return None
        del self._streams[stream_id]
        if stream.filled != len(stream.buffer):
            raise ChunkError(f"chunk stream {stream_id}: got {stream.filled} bytes of {len(stream.buffer)}", stream_id)
        return stream.buffer

    def discard(self, stream_id: str) -> None:
        """Forget a partial stream (e.g. it was evicted or its connection went away)."""
        self._streams.pop(stream_id, None)

    def clear(self) -> None:
        """Forget every partial stream."""
        self._streams.clear()

    def _open(self, stream_id: str, index: int, count: int, total: int) -> _Stream:
        if index != 0:
            raise ChunkError(f"chunk stream {stream_id}: starts at index {index}, chunk 0 missing", stream_id)
        if total > self.max_body_size:
            raise ChunkError(
                f"chunk stream {stream_id}: declared total {total} bytes is over the limit of {self.max_body_size}",
                stream_id,
            )
        if len(self._streams) >= self.max_streams:
            raise ChunkError(
                f"chunk stream {stream_id}: too many partial streams (limit {self.max_streams})", stream_id
            )
        stream = _Stream(bytearray(total), count)
        self._streams[stream_id] = stream
        return stream

    @staticmethod
    def _check(stream_id: str, stream: _Stream, index: int, count: int, total: int, size: int) -> None:
        where = f"chunk stream {stream_id}, index {index}"
        if index < stream.next_index:
            raise ChunkError(f"{where}: duplicated chunk (expected index {stream.next_index})", stream_id)
        if index > stream.next_index:
            raise ChunkError(f"{where}: chunk {stream.next_index} missing or out of order", stream_id)
        if count != stream.count or total != len(stream.buffer):
            raise ChunkError(
                f"{where}: count/total {count}/{total} differ from the stream's {stream.count}/{len(stream.buffer)}",
                stream_id,
            )
        if stream.filled + size > len(stream.buffer):
            raise ChunkError(f"{where}: chunk overruns the declared total of {total} bytes", stream_id)


def _read_headers(headers: dict[str, Any]) -> tuple[str, int, int, int]:
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
