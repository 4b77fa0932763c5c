"""fl_broker.transport.rabbitmq.frames decodes and marshals exactly as pika does, with fewer copies."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pika import channel as pika_channel
from pika import connection as pika_connection
from pika import frame, spec

from fl_broker.transport import chunking
from fl_broker.transport.rabbitmq import amqp, frames


class FakeConnection:
    """The parts of pika's Connection that the frame functions use; records what they process and output."""

    def __init__(self, body_max_length: int = 1000) -> None:
        self._frame_buffer = b""
        self.bytes_received = 0
        self._body_max_length = body_max_length
        self.processed: list[Any] = []
        self.output: list[bytes] = []

    def _process_frame(self, frame_value: Any) -> None:
        self.processed.append(frame_value)

    def _output_marshaled_frames(self, marshaled: list[bytes]) -> None:
        self.output.extend(marshaled)

    def _read_frame(self) -> Any:
        return pika_connection.Connection._read_frame(self)  # type: ignore[arg-type]

    def _trim_frame_buffer(self, count: int) -> None:
        pika_connection.Connection._trim_frame_buffer(self, count)  # type: ignore[arg-type]


def describe(frame_value: Any) -> tuple[Any, ...]:
    """A comparable summary of a decoded frame."""
    if isinstance(frame_value, frame.Body):
        return ("body", frame_value.channel_number, bytes(frame_value.fragment))
    if isinstance(frame_value, frame.Method):
        return ("method", frame_value.channel_number, repr(frame_value.method))
    if isinstance(frame_value, frame.Header):
        return ("header", frame_value.channel_number, frame_value.body_size, repr(frame_value.properties))
    return (type(frame_value).__name__, getattr(frame_value, "channel_number", None))


def wire_bytes(body: bytes, body_max: int = 1000) -> bytes:
    """A delivery (method, header, body frames) and a heartbeat as pika would receive them."""
    fake = FakeConnection(body_max)
    method = spec.Basic.Deliver(consumer_tag="ctag", delivery_tag=7, exchange="fl.x", routing_key="k")
    props = spec.BasicProperties(headers={"x-fl-chunk-index": 3}, message_id="m1")
    frames.PIKA_SEND_MESSAGE(fake, 1, method, (props, body))  # type: ignore[arg-type]
    return b"".join([*fake.output, frame.Heartbeat().marshal()])


def feed(function: Any, data: bytes, cuts: list[int]) -> FakeConnection:
    fake = FakeConnection()
    bounds = [0, *sorted(cuts), len(data)]
    for start, stop in zip(bounds, bounds[1:], strict=False):
        function(fake, data[start:stop])
    return fake


def test_decoding_matches_pika_at_every_cut() -> None:
    data = wire_bytes(bytes(range(256)) * 11)  # 2816 bytes: three body frames
    expected = feed(frames.PIKA_ON_DATA_AVAILABLE, data, [])
    assert [describe(f)[0] for f in expected.processed] == ["method", "header", "body", "body", "body", "Heartbeat"]
    for cut in range(1, len(data)):
        got = feed(frames.on_data_available, data, [cut])
        assert [describe(f) for f in got.processed] == [describe(f) for f in expected.processed], cut
        assert got.bytes_received == len(data) and got._frame_buffer == b""


def test_decoding_matches_pika_with_many_small_reads() -> None:
    data = wire_bytes(random.Random(1).randbytes(5000))
    expected = feed(frames.PIKA_ON_DATA_AVAILABLE, data, [])
    rng = random.Random(2)
    for _ in range(50):
        cuts = rng.sample(range(1, len(data)), rng.randint(1, 60))
        got = feed(frames.on_data_available, data, cuts)
        assert [describe(f) for f in got.processed] == [describe(f) for f in expected.processed]


def test_a_partial_frame_waits_for_the_rest() -> None:
    data = wire_bytes(b"x" * 10)
    fake = FakeConnection()
    frames.on_data_available(fake, data[:-3])
    assert fake._frame_buffer and [describe(f)[0] for f in fake.processed] == ["method", "header", "body"]
    frames.on_data_available(fake, data[-3:])
    assert describe(fake.processed[-1])[0] == "Heartbeat" and fake._frame_buffer == b""


def test_a_bad_frame_end_is_refused_like_pika() -> None:
    body_frame = bytearray(frame.Body(1, b"abc").marshal())
    body_frame[-1] = 0
    with pytest.raises(frame.exceptions.InvalidFrameError):
        frames.on_data_available(FakeConnection(), bytes(body_frame))


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 4321])
def test_sending_marshals_the_same_bytes_as_pika(size: int) -> None:
    body = random.Random(size).randbytes(size)
    method = spec.Basic.Publish(exchange="fl.x", routing_key="k")
    props = spec.BasicProperties(delivery_mode=2, headers={"a": 1})
    ours, pikas = FakeConnection(), FakeConnection()
    frames.send_message(ours, 1, method, (props, body))
    frames.PIKA_SEND_MESSAGE(pikas, 1, method, (props, body))  # type: ignore[arg-type]
    assert ours.output == pikas.output
    assert frames.marshal_body(frame.Body(2, b"abc")) == frames.PIKA_MARSHAL_BODY(frame.Body(2, b"abc"))


@pytest.mark.parametrize("cuts", [[], [1], [999, 1000], [7, 500, 1500, 3000]])
def test_a_view_or_pieces_body_marshals_the_same_bytes_as_pika_would_its_join(cuts: list[int]) -> None:
    body = random.Random(len(cuts)).randbytes(4321)
    bounds = [0, *cuts, len(body)]
    pieces = chunking.Pieces([memoryview(body)[a:b] for a, b in zip(bounds, bounds[1:], strict=False)])
    method = spec.Basic.Publish(exchange="fl.x", routing_key="k")
    props = spec.BasicProperties(delivery_mode=2)
    expected = FakeConnection()
    frames.PIKA_SEND_MESSAGE(expected, 1, method, (props, body))  # type: ignore[arg-type]
    for sent in (pieces, memoryview(body)):
        ours = FakeConnection()
        frames.send_message(ours, 1, method, (props, sent))
        assert ours.output == expected.output


class FakeChannel:
    """The parts of pika's Channel that frames.publish uses; records what it sends."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def _raise_if_not_open(self) -> None:
        pass

    def _send_method(self, method: Any, content: Any) -> None:
        self.sent.append((method, content))


def test_publish_hands_the_body_to_pika_as_it_is_with_mandatory_set() -> None:
    channel, body = FakeChannel(), chunking.Pieces([b"ab", bytearray(b"cd")])
    props = spec.BasicProperties()
    frames.publish(channel, "fl.x", "k", body, props)
    ((method, (sent_props, sent)),) = channel.sent
    assert (method.exchange, method.routing_key, method.mandatory) == ("fl.x", "k", True)
    assert sent is body and sent_props is props  # no copy into bytes before the frames are marshalled


def test_installed_into_pika() -> None:
    assert amqp.frames is frames  # importing the transport installs them
    assert frames.INSTALLED
    assert pika_connection.Connection._on_data_available is frames.on_data_available
    assert frame.Body.marshal is frames.marshal_body


def test_a_delivery_of_several_frames_is_handed_over_as_pieces_other_content_joined() -> None:
    body = random.Random(3).randbytes(2500)

    def assemble(method: Any, payload: bytes) -> Any:
        fake = FakeConnection()
        frames.send_message(fake, 1, method, (spec.BasicProperties(), payload))
        assembler = pika_channel.ContentFrameAssembler()
        decoded = feed(frames.on_data_available, b"".join(fake.output), [5, 1500]).processed
        return [assembler.process(f) for f in decoded][-1]

    deliver = spec.Basic.Deliver(consumer_tag="c", delivery_tag=1, exchange="x", routing_key="k")
    _, _, got = assemble(deliver, body)
    assert isinstance(got, chunking.Pieces) and len(got.parts) == 3 and frames.joined(got) == body
    _, _, small = assemble(deliver, b"tiny")
    assert small == b"tiny"  # one frame: nothing to join, plain bytes
    _, _, returned = assemble(
        spec.Basic.Return(reply_code=312, reply_text="NO_ROUTE", exchange="x", routing_key="k"), body
    )
    assert returned == body and isinstance(returned, bytes)  # pika reads returned bodies itself


def test_confirms_by_tag_multiple_nack_and_return() -> None:
    from fl_broker.transport.rabbitmq.publisher import Confirms

    confirms = Confirms()
    for _ in range(5):
        confirms.sent()
    assert confirms.outstanding == {1, 2, 3, 4, 5} and confirms.failure() is None
    confirms.on_confirm(frame.Method(1, spec.Basic.Ack(delivery_tag=2)))
    assert confirms.outstanding == {1, 3, 4, 5}
    confirms.on_confirm(frame.Method(1, spec.Basic.Ack(delivery_tag=4, multiple=True)))
    assert confirms.outstanding == {5}
    confirms.on_confirm(frame.Method(1, spec.Basic.Nack(delivery_tag=5)))
    assert not confirms.outstanding and "Nack" in type(confirms.failure()).__name__
    confirms.on_return(None, None, None, b"")
    assert "Unroutable" in type(confirms.failure()).__name__
