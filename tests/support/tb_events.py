"""Reading TensorBoard event files back, for tests: the TFRecord framing (length, masked CRC-32C of it, the
record, masked CRC-32C of it) checked record by record, each record a tensorboardX `Event` protobuf."""

from __future__ import annotations

import struct
from pathlib import Path

from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of every scalar in the event files of `folder`, in the order written."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert files, f"no event file in {folder}"
    for path in files:
        for record in _records(path.read_bytes()):
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def _records(data: bytes) -> list[bytes]:
    records, pos = [], 0
    while pos < len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        assert header_crc == masked_crc32c(header), f"bad length CRC at byte {pos}"
        record = data[pos + 12 : pos + 12 + length]
        (record_crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
        assert record_crc == masked_crc32c(record), f"bad record CRC at byte {pos}"
        records.append(record)
        pos += 16 + length
    return records
