"""Fewer copies of message bodies in pika's frame layer (receive and send), installed when the package loads.

pika copies every byte of a large body four to five times in Python on each side, with the GIL held: on
receive it appends each socket read to its frame buffer (`+=`), slices each frame out of it, then slices
the rest of the buffer off after every frame, and finally joins the frames of a message; on send it slices
each frame out of the body and marshals it with a join and two concatenations. For a model-sized result
that is most of what the server's I/O thread does (profiled: a 10M-float x 8-clients round).

Here a receive decodes body frames as views into the bytes each socket read returned, and only a frame
cut by a read boundary is copied to be completed; a delivery's frames are handed over unjoined (`Pieces`),
so the spool writes them to disk with one `pwritev` and other consumers join them once; a send
takes frames as views of the body (or of an encoder's parts, never joined first) and marshals each with
one join, and `publish()` hands such a body to pika without the copy into `bytes` that pika's own
`basic_publish` needs. Method and header frames (small)
still go through pika's own decoder. Both replace private pika methods: `install()` checks that they
exist and keeps pika's versions otherwise; tests/transport/test_frames.py checks the decoder against
pika's on the same bytes cut at every boundary.
"""

from __future__ import annotations

import logging
import math
import os
import struct
from typing import Any

from pika import channel as pika_channel
from pika import connection as pika_connection
from pika import frame, spec

from fl_broker.transport.chunking import Pieces, whole

log = logging.getLogger(__name__)

_HEADER = spec.FRAME_HEADER_SIZE  # type (1), channel (2), payload size (4)
_TRAILER = spec.FRAME_END_SIZE
_END = bytes([spec.FRAME_END])
_PROTOCOL_HEADER = b"AMQP"
_PROTOCOL_HEADER_SIZE = 8
# pika's own versions, as imported (tests compare against them; install() never removes them from here).
PIKA_ON_DATA_AVAILABLE = pika_connection.Connection._on_data_available
PIKA_SEND_MESSAGE = pika_connection.Connection._send_message
PIKA_MARSHAL_BODY = frame.Body.marshal
PIKA_FINISH_CONTENT = pika_channel.ContentFrameAssembler._finish


def read_frame(view: memoryview, offset: int) -> tuple[int, Any]:
    """(bytes used, frame) of the frame at `offset` of `view`, or (0, None) if it is not all there yet.

    A body frame's fragment is a view of `view` (no copy); other frames are decoded by pika."""
    available = len(view) - offset
    if available < _HEADER:
        return 0, None
    if view[offset : offset + 4] == _PROTOCOL_HEADER:
        if available < _PROTOCOL_HEADER_SIZE:
            return 0, None
        return frame.decode_frame(bytes(view[offset : offset + _PROTOCOL_HEADER_SIZE]))
    frame_type, channel, size = struct.unpack_from(">BHL", view, offset)
    frame_end = _HEADER + size + _TRAILER
    if available < frame_end:
        return 0, None
    if frame_type != spec.FRAME_BODY:
        return frame.decode_frame(bytes(view[offset : offset + frame_end]))
    if view[offset + frame_end - 1] != spec.FRAME_END:
        raise frame.exceptions.InvalidFrameError("Invalid FRAME_END marker")
    return frame_end, frame.Body(channel, view[offset + _HEADER : offset + frame_end - _TRAILER])


def _needed(head: bytes) -> int:
    """How many bytes the partial frame `head` lacks before it can be decoded (a lower bound while its
    header is incomplete)."""
    if len(head) < _HEADER:
        return _HEADER - len(head)
    if head[:4] == _PROTOCOL_HEADER:
        return max(0, _PROTOCOL_HEADER_SIZE - len(head))
    (size,) = struct.unpack_from(">L", head, 3)
    return _HEADER + size + _TRAILER - len(head)


def on_data_available(conn: Any, data_in: bytes) -> None:
    """pika's `Connection._on_data_available` with views instead of buffer slices (see the module doc).

    `conn._frame_buffer` holds only the start of a frame that the last read cut off (at most one frame)."""
    view = memoryview(data_in)
    start = 0
    while conn._frame_buffer and start < len(view):  # complete the frame cut off by the last read first
        need = min(_needed(conn._frame_buffer), len(view) - start)
        conn._frame_buffer = b"".join((conn._frame_buffer, view[start : start + need]))
        start += need
        used, frame_value = read_frame(memoryview(conn._frame_buffer), 0)
        if frame_value is not None:
            conn._frame_buffer = conn._frame_buffer[used:]  # empty: the head held exactly one frame
            conn.bytes_received += used
            conn._process_frame(frame_value)
    while start < len(view):
        used, frame_value = read_frame(view, start)
        if frame_value is None:
            conn._frame_buffer = bytes(view[start:])
            return
        start += used
        conn.bytes_received += used
        conn._process_frame(frame_value)


def finish_content(assembler: Any) -> tuple[Any, Any, bytes | Pieces]:
    """pika's `ContentFrameAssembler._finish`, except that a delivery of several frames keeps them as
    `Pieces` (views of the socket reads) instead of joining them: a consumer that writes the body to disk
    (the spool) writes the pieces as they are, others call `joined()`. Returns and get-oks are joined as
    pika does, since pika's own code reads those bodies."""
    method, header, fragments = assembler._method_frame, assembler._header_frame, assembler._body_fragments
    assembler._reset()
    if len(fragments) > 1 and isinstance(method.method, spec.Basic.Deliver):
        return method, header, Pieces(fragments)
    return method, header, b"".join(fragments)


def joined(body: bytes | Pieces) -> bytes:
    """A delivered body as one `bytes` (joined if it came as pieces)."""
    return body.read(0, body.nbytes) if isinstance(body, Pieces) else body


def marshal_body(self: Any) -> bytes:
    """pika's `Body.marshal` with one copy of the fragment instead of three."""
    return marshal_fragments(self.channel_number, [self.fragment])


def marshal_fragments(channel_number: int, fragments: list[memoryview]) -> bytes:
    """One body frame whose payload is `fragments` in order, marshalled with one copy of them."""
    header = struct.pack(">BHI", spec.FRAME_BODY, channel_number, sum(len(f) for f in fragments))
    return b"".join((header, *fragments, _END))


def send_message(
    conn: Any, channel_number: int, method_frame: Any, content: tuple[Any, bytes | memoryview | Pieces]
) -> None:
    """pika's `Connection._send_message` with body frames cut as views of the body (bytes, a view, or
    `Pieces`: an encoder's parts), each copied once when it is marshalled; everything is marshalled before
    anything is output, as pika does, so the body is not referenced once this returns."""
    properties, body = content
    length = len(body)
    marshaled = [
        frame.Method(channel_number, method_frame).marshal(),
        frame.Header(channel_number, length, properties).marshal(),
    ]
    pieces = body if isinstance(body, Pieces) else Pieces([body])
    step = conn._body_max_length
    for index in range(math.ceil(length / step) if length else 0):
        marshaled.append(marshal_fragments(channel_number, pieces.views(index * step, (index + 1) * step)))
    conn._output_marshaled_frames(marshaled)


def unsent_bytes(channel: Any) -> int:
    """How many marshalled bytes pika holds for the socket on `channel`'s connection (a `Channel`, not the
    blocking wrapper); 0 if this pika does not say."""
    transport = getattr(getattr(channel, "connection", None), "_transport", None)
    size = getattr(transport, "get_write_buffer_size", None)
    return int(size()) if callable(size) else 0


def publish(channel: Any, exchange: str, key: str, body: bytes | memoryview | Pieces, props: Any) -> None:
    """`basic_publish` on pika's channel `channel` (a `Channel`, not the blocking wrapper), with `mandatory`.

    With this module's `send_message` installed, the body goes as it is (a view or `Pieces` of the caller's
    buffers: nothing copied before the frames are marshalled); pika's own `basic_publish` takes `bytes` only,
    so otherwise it is joined first."""
    if not INSTALLED:
        channel.basic_publish(exchange, key, whole(body), props, True)
        return
    channel._raise_if_not_open()
    channel._send_method(spec.Basic.Publish(exchange=exchange, routing_key=key, mandatory=True), (props, body))


# Set to 1 to keep pika's own frame code: for side-by-side measurements (bench/bench_transport.py --pika-frames).
KEEP_PIKA_ENV = "FL_BROKER_PIKA_FRAMES"
INSTALLED = False  # whether install() replaced pika's methods (publish() relies on it)


def install() -> bool:
    """Put these in place of pika's methods; False (pika's kept) if this pika lacks one of them or
    $FL_BROKER_PIKA_FRAMES is 1."""
    global INSTALLED
    if os.environ.get(KEEP_PIKA_ENV) == "1":
        return False
    cls = pika_connection.Connection
    wanted = ("_on_data_available", "_send_message", "_process_frame", "_output_marshaled_frames")
    publishing = all(hasattr(pika_channel.Channel, name) for name in ("_raise_if_not_open", "_send_method"))
    assembler = pika_channel.ContentFrameAssembler
    parts = ("_finish", "_reset", "_handle_body_frame")
    if (
        not all(hasattr(cls, name) for name in wanted)
        or not hasattr(frame.Body, "marshal")
        or not all(hasattr(assembler, name) for name in parts)
        or not publishing
    ):
        log.debug("pika's frame layer is not the one expected; keeping its copies")
        return False
    cls._on_data_available = on_data_available
    cls._send_message = send_message
    frame.Body.marshal = marshal_body
    assembler._finish = finish_content
    INSTALLED = True
    return True
