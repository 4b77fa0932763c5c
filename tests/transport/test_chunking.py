"""Unit tests of fl_broker.transport.chunking (no broker)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fl_broker.transport import chunking
from fl_broker.transport.chunking import ChunkError, Reassembler


def _feed(reassembler: Reassembler, chunks: list[tuple[dict, memoryview]]) -> bytearray | None:
    result = None
    for headers, data in chunks:
        result = reassembler.add(headers, data)
    return result


@given(body=st.binary(max_size=200), chunk_size=st.integers(min_value=1, max_value=64))
def test_split_then_reassemble_round_trips(body: bytes, chunk_size: int) -> None:
    chunks = chunking.split(body, chunk_size)
    assert all(len(data) <= chunk_size for _, data in chunks)
    assert [h[chunking.INDEX_HEADER] for h, _ in chunks] == list(range(len(chunks)))
    assert _feed(Reassembler(max_body_size=1000), chunks) == body


def test_split_is_zero_copy_and_headers_describe_the_stream() -> None:
    body = bytearray(b"abcdefghij")
    chunks = chunking.split(body, 4)
    assert [bytes(d) for _, d in chunks] == [b"abcd", b"efgh", b"ij"]
    headers = chunks[0][0]
    assert headers[chunking.COUNT_HEADER] == 3 and headers[chunking.TOTAL_HEADER] == 10
    assert len({h[chunking.STREAM_HEADER] for h, _ in chunks}) == 1
    body[0] = ord("z")
    assert bytes(chunks[0][1])[:1] == b"z"


def test_completed_body_is_a_writable_bytearray() -> None:
    result = _feed(Reassembler(100), chunking.split(b"x" * 10, 3))
    assert isinstance(result, bytearray)
    result[0] = 0


def test_is_chunk() -> None:
    assert chunking.is_chunk(chunking.split(b"abc", 2)[0][0])
    assert not chunking.is_chunk({"other": 1})
    assert not chunking.is_chunk(None)


def test_split_rejects_nonpositive_chunk_size() -> None:
    with pytest.raises(ValueError):
        chunking.split(b"abc", 0)


def test_missing_chunk_names_stream_and_index() -> None:
    chunks = chunking.split(b"0123456789", 2)
    stream = chunks[0][0][chunking.STREAM_HEADER]
    r = Reassembler(100)
    r.add(*chunks[0])
    with pytest.raises(ChunkError, match=rf"{stream}, index 2: chunk 1 missing") as info:
        r.add(*chunks[2])
    assert info.value.stream == stream
    assert bytes(info.value.partial or b"") == b"01"
    assert r.open_streams == []


def test_duplicated_chunk() -> None:
    chunks = chunking.split(b"0123456789", 2)
    r = Reassembler(100)
    r.add(*chunks[0])
    r.add(*chunks[1])
    with pytest.raises(ChunkError, match="index 1: duplicated chunk"):
        r.add(*chunks[1])


def test_stream_not_starting_at_zero() -> None:
    chunks = chunking.split(b"0123456789", 2)
    with pytest.raises(ChunkError, match="starts at index 1, chunk 0 missing"):
        Reassembler(100).add(*chunks[1])


def test_declared_total_over_limit_is_refused_before_allocating() -> None:
    headers, data = chunking.split(b"0123456789", 2)[0]
    with pytest.raises(ChunkError, match="over the limit of 9"):
        Reassembler(max_body_size=9).add(headers, data)


def test_mismatched_total_or_count() -> None:
    chunks = chunking.split(b"0123456789", 2)
    r = Reassembler(100)
    r.add(*chunks[0])
    headers, data = chunks[1]
    with pytest.raises(ChunkError, match="count/total 5/11 differ"):
        r.add({**headers, chunking.TOTAL_HEADER: 11}, data)


def test_chunk_overrunning_total() -> None:
    chunks = chunking.split(b"0123456789", 5)
    r = Reassembler(100)
    r.add(*chunks[0])
    with pytest.raises(ChunkError, match="overruns the declared total"):
        r.add(chunks[1][0], memoryview(b"123456"))


def test_short_stream_is_an_error() -> None:
    chunks = chunking.split(b"0123456789", 5)
    r = Reassembler(100)
    r.add(*chunks[0])
    with pytest.raises(ChunkError, match="got 7 bytes of 10"):
        r.add(chunks[1][0], memoryview(b"ab"))


@pytest.mark.parametrize(
    "headers",
    [
        {chunking.INDEX_HEADER: 0, chunking.COUNT_HEADER: 1, chunking.TOTAL_HEADER: 1},
        {chunking.STREAM_HEADER: "s", chunking.INDEX_HEADER: "0", chunking.COUNT_HEADER: 1, chunking.TOTAL_HEADER: 1},
        {chunking.STREAM_HEADER: "s", chunking.INDEX_HEADER: 0, chunking.COUNT_HEADER: 1},
        {chunking.STREAM_HEADER: "s", chunking.INDEX_HEADER: -1, chunking.COUNT_HEADER: 1, chunking.TOTAL_HEADER: 1},
        {chunking.STREAM_HEADER: "s", chunking.INDEX_HEADER: 1, chunking.COUNT_HEADER: 1, chunking.TOTAL_HEADER: 1},
        {chunking.STREAM_HEADER: "s", chunking.INDEX_HEADER: 0, chunking.COUNT_HEADER: 0, chunking.TOTAL_HEADER: 1},
        {chunking.STREAM_HEADER: "s", chunking.INDEX_HEADER: True, chunking.COUNT_HEADER: 2, chunking.TOTAL_HEADER: 1},
    ],
)
def test_malformed_headers(headers: dict) -> None:
    with pytest.raises(ChunkError):
        Reassembler(100).add(headers, b"x")


def test_stream_id_may_arrive_as_bytes() -> None:
    headers, data = chunking.split(b"ab", 1)[0]
    r = Reassembler(100)
    r.add({**headers, chunking.STREAM_HEADER: headers[chunking.STREAM_HEADER].encode()}, data)
    assert r.open_streams == [headers[chunking.STREAM_HEADER]]


def test_too_many_partial_streams() -> None:
    r = Reassembler(100, max_streams=2)
    for _ in range(2):
        r.add(*chunking.split(b"abcd", 2)[0])
    with pytest.raises(ChunkError, match="too many partial streams"):
        r.add(*chunking.split(b"abcd", 2)[0])
    assert len(r.open_streams) == 2


def test_interleaved_streams_complete_independently() -> None:
    a, b = chunking.split(b"aaaa", 2), chunking.split(b"bbbbbb", 2)
    r = Reassembler(100)
    assert r.add(*a[0]) is None and r.add(*b[0]) is None and r.add(*b[1]) is None
    assert r.add(*a[1]) == b"aaaa"
    assert r.add(*b[2]) == b"bbbbbb"


def test_discard_and_clear() -> None:
    chunks = chunking.split(b"abcd", 2)
    r = Reassembler(100)
    r.add(*chunks[0])
    r.discard(chunks[0][0][chunking.STREAM_HEADER])
    assert r.open_streams == []
    r.add(*chunks[0])
    r.clear()
    with pytest.raises(ChunkError, match="chunk 0 missing"):
        r.add(*chunks[1])


def test_memory_is_taken_as_chunks_arrive_not_from_the_announced_total() -> None:
    headers, data = chunking.split(b"x" * 100, 10)[0]
    forged = {**headers, chunking.TOTAL_HEADER: 1 << 30, chunking.COUNT_HEADER: 1000}
    r = Reassembler(max_body_size=1 << 31)
    assert r.add(forged, data) is None
    assert len(r.partial(headers[chunking.STREAM_HEADER])) == 10  # not 1 GiB reserved up front


def test_one_sender_may_hold_only_so_many_partial_streams() -> None:
    r = Reassembler(100, max_streams=8, max_streams_per_sender=2)
    for _ in range(2):
        r.add(*chunking.split(b"abcd", 2)[0], sender="site-1/site-1")
    with pytest.raises(ChunkError, match="already has 2 partial streams"):
        r.add(*chunking.split(b"abcd", 2)[0], sender="site-1/site-1")
    assert r.add(*chunking.split(b"abcd", 2)[0], sender="site-2/site-2") is None


def test_idle_streams_are_listed_oldest_first() -> None:
    r = Reassembler(100)
    first, second = chunking.split(b"abcd", 2), chunking.split(b"efgh", 2)
    r.add(*first[0])
    r.add(*second[0])
    assert r.idle(0.0) == [first[0][0][chunking.STREAM_HEADER], second[0][0][chunking.STREAM_HEADER]]
    assert r.idle(3600) == []


@given(
    parts=st.lists(st.binary(max_size=40), max_size=6),
    chunk_size=st.integers(min_value=1, max_value=64),
)
def test_pieces_chunk_like_the_joined_body(parts: list[bytes], chunk_size: int) -> None:
    joined = b"".join(parts)
    pieces = chunking.Pieces([bytearray(p) for p in parts])
    assert len(pieces) == len(joined) and chunking.whole(pieces) == joined
    chunks = chunking.split(pieces, chunk_size)
    assert [chunking.whole(d) for _, d in chunks] == [bytes(d) for _, d in chunking.split(joined, chunk_size)]
    assert _feed(Reassembler(max_body_size=1000), chunks) == joined


def test_chunks_of_pieces_are_views_of_the_parts_never_copies() -> None:
    first, second = bytearray(b"abcd"), bytearray(b"efgh")
    chunks = list(chunking.iter_chunks(chunking.Pieces([first, second]), 3))
    second[0] = ord("E")  # pieces share the caller's memory: nothing was copied, not even when cut
    assert [chunking.whole(data) for _, data in chunks] == [b"abc", b"dEf", b"gh"]
    assert all(isinstance(data, chunking.Pieces) for _, data in chunks)
    assert [len(data.parts) for _, data in chunks] == [1, 2, 1]  # the middle chunk spans both parts


def test_a_chunk_given_as_pieces_is_reassembled_like_its_join() -> None:
    r = Reassembler(100)
    (h0, d0), (h1, d1) = chunking.split(b"0123456789", 5)
    assert r.add(h0, chunking.Pieces([d0[:2], d0[2:]])) is None
    assert r.add(h1, chunking.Pieces([d1])) == bytearray(b"0123456789")
