"""Unit tests of fl_broker.transport.spool: chunk streams on disk, across restarts (no broker)."""

from __future__ import annotations

import os
import time

import pytest

from fl_broker.transport import chunking
from fl_broker.transport.chunking import ChunkError
from fl_broker.transport.spool import ChunkSpool, SpoolOptions

WRITTEN, DUPLICATE, DROPPED = ChunkSpool.WRITTEN, ChunkSpool.DUPLICATE, ChunkSpool.DROPPED


def props(**extra):
    return lambda: {"message_id": "m1", "user_id": "site-1", "headers": {"h": 1}, **extra}


def feed(spool: ChunkSpool, chunks, sender="site-1"):
    out = None
    for headers, data in chunks:
        status, body = spool.add(headers, data, sender, props())
        assert status == WRITTEN
        out = body or out
    return out


def test_a_stream_is_written_and_handed_over_as_a_writable_map(tmp_path):
    body = os.urandom(10_000)
    spooled = feed(ChunkSpool(SpoolOptions(tmp_path), 1 << 20), chunking.split(body, 999))
    assert bytes(spooled.body) == body
    assert spooled.properties["message_id"] == "m1" and not spooled.recovered
    spooled.body[0] = 0  # private copy-on-write map: the codec can decode it in place
    assert (tmp_path / f"{spooled.stream_id}.data").read_bytes() == body  # the file is untouched


def test_disk_is_taken_as_chunks_arrive_not_from_the_announced_total(tmp_path):
    spool = ChunkSpool(SpoolOptions(tmp_path), 1 << 30)
    headers, data = chunking.split(b"x" * 100, 10)[0]
    forged = {**headers, chunking.TOTAL_HEADER: 1 << 30, chunking.COUNT_HEADER: 1000}
    spool.add(forged, data, "site-1", props())
    assert (tmp_path / f"{headers[chunking.STREAM_HEADER]}.data").stat().st_size == 10


def test_a_partial_stream_continues_after_a_restart_and_duplicates_are_dropped(tmp_path):
    body = os.urandom(5000)
    chunks = chunking.split(body, 1000)
    first = ChunkSpool(SpoolOptions(tmp_path), 1 << 20)
    for chunk in chunks[:3]:
        first.add(*chunk, "site-1", props())
    first.close()  # the consumer died here; chunk 2 was written but (say) its ack was lost
    second = ChunkSpool(SpoolOptions(tmp_path), 1 << 20)
    assert second.recover() == []
    assert second.partial_streams == [chunks[0][0][chunking.STREAM_HEADER]]
    assert second.add(*chunks[2], "site-1", props()) == (DUPLICATE, None)  # redelivered
    spooled = feed(second, chunks[3:])
    assert bytes(spooled.body) == body


def test_bytes_written_after_the_last_record_are_discarded_on_recovery(tmp_path):
    chunks = chunking.split(b"a" * 30, 10)
    spool = ChunkSpool(SpoolOptions(tmp_path), 1000)
    spool.add(*chunks[0], "site-1", props())
    spool.close()
    data_file = tmp_path / f"{chunks[0][0][chunking.STREAM_HEADER]}.data"
    with data_file.open("ab") as f:
        f.write(b"garbage")  # a write the crash interrupted before .meta was replaced
    again = ChunkSpool(SpoolOptions(tmp_path), 1000)
    again.recover()
    assert bytes(feed(again, chunks[1:]).body) == b"a" * 30


def test_a_complete_body_not_settled_is_handed_over_again_after_a_restart(tmp_path):
    chunks = chunking.split(b"b" * 50, 20)
    spooled = feed(ChunkSpool(SpoolOptions(tmp_path), 1000), chunks)
    again = ChunkSpool(SpoolOptions(tmp_path), 1000)
    [recovered] = again.recover()
    assert recovered.recovered and recovered.stream_id == spooled.stream_id
    assert bytes(recovered.body) == b"b" * 50
    again.finish(recovered.stream_id)
    third = ChunkSpool(SpoolOptions(tmp_path), 1000)
    assert third.recover() == []
    # The last chunk redelivered after a crash between writing and acking it counts for nothing.
    assert third.add(*chunks[-1], "site-1", props()) == (DUPLICATE, None)
    assert not (tmp_path / f"{spooled.stream_id}.data").exists()


def test_one_sender_may_hold_only_so_many_partial_streams(tmp_path):
    spool = ChunkSpool(SpoolOptions(tmp_path, max_streams_per_sender=2), 1000)
    streams = [chunking.split(b"c" * 20, 10) for _ in range(3)]
    for stream in streams[:2]:
        spool.add(*stream[0], "site-1", props())
    with pytest.raises(ChunkError, match="site-1 already has 2 partial streams"):
        spool.add(*streams[2][0], "site-1", props())
    assert spool.add(*streams[2][1], "site-1", props()) == (DROPPED, None)  # the rest of it: no more noise
    assert feed(spool, chunking.split(b"d" * 20, 10), sender="site-2") is not None  # others are not blocked


def test_bytes_per_sender_are_bounded(tmp_path):
    spool = ChunkSpool(SpoolOptions(tmp_path, max_bytes_per_sender=25), 1000)
    chunks = chunking.split(b"e" * 40, 10)
    for chunk in chunks[:2]:
        spool.add(*chunk, "site-1", props())
    with pytest.raises(ChunkError, match="more than 25 bytes"):
        spool.add(*chunks[2], "site-1", props())
    assert spool.partial_streams == []


def test_idle_partial_streams_expire_with_a_reason(tmp_path):
    spool = ChunkSpool(SpoolOptions(tmp_path, stream_timeout=0.05), 1000)
    chunks = chunking.split(b"f" * 30, 10)
    spool.add(*chunks[0], "site-1", props())
    time.sleep(0.1)
    [expired] = spool.expire()
    assert "expired: 1 of 3 chunks (10 of 30 bytes)" in expired.reason and "site-1" in expired.reason
    assert expired.properties["message_id"] == "m1"
    assert list(tmp_path.iterdir()) == []
    assert spool.add(*chunks[1], "site-1", props()) == (DROPPED, None)


def test_malformed_streams_are_refused_and_removed(tmp_path):
    spool = ChunkSpool(SpoolOptions(tmp_path), 1000)
    chunks = chunking.split(b"g" * 30, 10)
    spool.add(*chunks[0], "site-1", props())
    with pytest.raises(ChunkError, match="chunk 1 missing"):
        spool.add(*chunks[2], "site-1", props())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ChunkError, match="over the limit"):
        spool.add(*chunking.split(b"h" * 2000, 100)[0], "site-1", props())


def test_a_stream_id_never_reaches_the_disk_unless_it_is_a_plain_identifier(tmp_path):
    headers, data = chunking.split(b"i" * 20, 10)[0]
    with pytest.raises(ChunkError, match="not a plain identifier"):
        ChunkSpool(SpoolOptions(tmp_path / "spool"), 1000).add(
            {**headers, chunking.STREAM_HEADER: "../../escape"}, data, "site-1", props()
        )
    assert not (tmp_path / "escape.data").exists()


def test_unreadable_records_are_ignored_on_recovery(tmp_path):
    (tmp_path / "abc.meta").write_bytes(b"\xc1 not msgpack")
    (tmp_path / "abc.data").write_bytes(b"x")
    (tmp_path / "orphan.data").write_bytes(b"y")
    assert ChunkSpool(SpoolOptions(tmp_path), 1000).recover() == []
    assert list(tmp_path.iterdir()) == []


def test_a_chunk_given_as_pieces_is_written_without_joining_even_when_the_kernel_writes_little(tmp_path, monkeypatch):
    from fl_broker.transport import spool as spool_module

    real_pwritev = os.pwritev
    calls = []

    def stingy_pwritev(fd, buffers, offset):  # a short write: at most 7 bytes, often mid-buffer
        calls.append(len(buffers))
        return real_pwritev(fd, [bytes(memoryview(buffers[0])[:7])], offset)

    body = os.urandom(3000)
    chunks = [
        (headers, chunking.Pieces([data[:100], b"", data[100:555], data[555:]]))
        for headers, data in chunking.split(body, 999)
    ]
    spooled = feed(ChunkSpool(SpoolOptions(tmp_path / "a"), 1 << 20), chunks)
    assert bytes(spooled.body) == body  # normal pwritev: all pieces in one call each
    monkeypatch.setattr(spool_module.os, "pwritev", stingy_pwritev)
    spooled = feed(ChunkSpool(SpoolOptions(tmp_path / "b"), 1 << 20), chunks)
    assert bytes(spooled.body) == body
    assert len(calls) >= 3000 // 7 and max(calls) == 3  # the empty piece is never handed to the kernel
