from __future__ import annotations

import struct
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fl_broker.errors import DecodeError as ErrorsDecodeError
from fl_broker.wire import codec
from fl_broker.wire.codec import DecodeError, decode, encode

BASE_DTYPES = [
    "?",
    "i1",
    "i2",
    "i4",
    "i8",
    "u1",
    "u2",
    "u4",
    "u8",
    "f2",
    "f4",
    "f8",
    "c8",
    "c16",
    np.dtype(np.longdouble).str[1:],
    np.dtype(np.clongdouble).str[1:],
]
DTYPES = sorted({np.dtype(order + code).str for code in BASE_DTYPES for order in "<>"})


def _frame(payload: bytes) -> bytes:
    return struct.pack(">BI", 0xC6, len(payload)) + payload


def _body(header: Any, *arrays: bytes) -> bytes:
    """A hand-built body in the codec layout, for decode refusal tests."""
    frames = [msgpack.packb(header, use_bin_type=True), *arrays]
    return struct.pack(">BI", 0xDD, len(frames)) + b"".join(_frame(f) for f in frames)


def _placeholder(index: Any, dtype: Any, shape: Any) -> msgpack.ExtType:
    return msgpack.ExtType(1, msgpack.packb([index, dtype, shape]))


def assert_same_array(got: Any, want: np.ndarray) -> None:
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype and got.dtype.str == want.dtype.str
    assert got.shape == want.shape
    assert got.tobytes() == np.ascontiguousarray(want).tobytes()


# --- round trip ----------------------------------------------------------------------------------------

arrays_strategy = st.sampled_from(DTYPES).flatmap(
    lambda dt: hnp.arrays(
        dtype=np.dtype(dt),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
        elements=None,
    )
)


def _reshape_input(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "F":
        return np.asfortranarray(array)
    if layout == "sliced" and array.ndim >= 1:
        return np.repeat(array, 2, axis=0)[::2]  # non-contiguous view with the same values
    if layout == "reversed" and array.ndim >= 1:
        return array[::-1]
    return array


@given(array=arrays_strategy, layout=st.sampled_from(["C", "F", "sliced", "reversed"]))
@settings(max_examples=300)
def test_array_round_trip_is_byte_exact(array: np.ndarray, layout: str) -> None:
    array = _reshape_input(array, layout)
    for body in (encode(array), bytearray(encode(array))):
        assert_same_array(decode(body), array)


@given(raw=st.binary(min_size=4, max_size=64))
def test_nan_payloads_survive(raw: bytes) -> None:
    array = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<f4")
    assert decode(encode({"w": array}))["w"].tobytes() == array.tobytes()


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
structures = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text() | st.integers(min_value=-(2**63), max_value=2**63 - 1), children, max_size=4)
    ),
    max_leaves=20,
)


@given(obj=structures)
def test_structure_round_trip(obj: Any) -> None:
    assert decode(encode(obj)) == obj


@given(array=arrays_strategy, obj=structures)
def test_arrays_nested_in_structures(array: np.ndarray, obj: Any) -> None:
    part = array[..., :1] if array.ndim else array
    decoded = decode(encode({"meta": obj, "layers": [array, {"again": part}]}))
    assert decoded["meta"] == obj
    assert_same_array(decoded["layers"][0], array)
    assert_same_array(decoded["layers"][1]["again"], part)


def test_tuples_become_lists() -> None:
    assert decode(encode((1, (2, 3)))) == [1, [2, 3]]


@pytest.mark.parametrize(
    "value",
    [
        np.float32(1.5),
        np.int8(-3),
        np.bool_(True),
        np.uint64(2**64 - 1),
        np.float64(np.nan),
        np.complex64(1 + 2j),
        np.float16(0.25),
        np.longdouble(1) / 3,
        np.dtype(">f8").type(2.0),
    ],
)
def test_numpy_scalars_round_trip(value: np.generic) -> None:
    got = decode(encode({"s": value}))["s"]
    assert type(got) is type(value)
    assert got.dtype == value.dtype and got.tobytes() == value.tobytes()


def test_body_is_plain_msgpack_list_of_bytes() -> None:
    arrays = [np.arange(10, dtype="f4"), np.ones((2, 2), dtype=">i8")]
    frames = msgpack.unpackb(encode({"a": arrays}))
    assert isinstance(frames, list) and len(frames) == 3
    assert all(type(frame) is bytes for frame in frames)
    assert frames[1] == arrays[0].tobytes() and frames[2] == arrays[1].tobytes()


def test_decode_error_is_the_one_from_errors() -> None:
    assert DecodeError is ErrorsDecodeError


# --- writability and zero copy -------------------------------------------------------------------------


def test_arrays_from_bytes_are_writable_copies() -> None:
    body = encode({"w": np.arange(6, dtype="f4").reshape(2, 3)})
    w = decode(body)["w"]
    assert w.flags.writeable
    w += 1  # what a FLARE trainer does
    assert decode(body)["w"][0, 0] == 0


def test_arrays_from_bytearray_are_writable_views() -> None:
    body = bytearray(encode({"w": np.arange(6, dtype="f4"), "v": np.zeros((2, 2), ">f8")}))
    decoded = decode(body)
    for array in decoded.values():
        assert array.flags.writeable
        assert np.shares_memory(array, np.frombuffer(body, dtype=np.uint8))
    decoded["w"] += 1
    assert decode(bytes(body))["w"][0] == 1


def test_read_only_memoryview_gives_copies() -> None:
    body = bytearray(encode({"w": np.arange(3, dtype="f4")}))
    w = decode(memoryview(body).toreadonly())["w"]
    assert w.flags.writeable and not np.shares_memory(w, np.frombuffer(body, dtype=np.uint8))


# --- encode refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, words",
    [
        (np.array([1, None], dtype=object), "object arrays"),
        (np.array(["a"]), "str arrays"),
        (np.array([b"a"]), "bytes arrays"),
        (np.zeros(2, dtype=[("x", "f4")]), "void/structured arrays"),
        (np.zeros(2, dtype="V4"), "void/structured arrays"),
        (np.array(["2020-01-01"], dtype="datetime64[D]"), "datetime arrays"),
        (np.array([1], dtype="timedelta64[s]"), "timedelta arrays"),
        (np.str_("x"), "str scalars"),
        (np.datetime64("2020-01-01"), "datetime scalars"),
        (np.ma.masked_array([1.0]), "masked arrays"),
    ],
)
def test_encode_refuses_dtypes_with_path(bad: Any, words: str) -> None:
    with pytest.raises(TypeError) as info:
        encode({"data": {"w": [0, 1, bad]}})
    assert str(info.value).startswith("obj['data']['w'][2]: " + words)


class StrSubclass(str):
    """Like a str Enum: it would come back as a plain str, so it is refused."""


@pytest.mark.parametrize("bad", [object(), {1, 2}, 1 + 2j, bytearray(b"x"), slice(1), StrSubclass("x")])
def test_encode_refuses_unknown_types(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"^obj\['k'\]: values of type .* are not allowed"):
        encode({"k": bad})


def test_encode_names_the_root() -> None:
    with pytest.raises(TypeError, match=r"^envelope\[0\]: values of type"):
        encode([object()], where="envelope")


@pytest.mark.parametrize("key", [1.5, None, b"k", True, (1, 2)])
def test_encode_refuses_bad_map_keys(key: Any) -> None:
    with pytest.raises(TypeError, match=r"^obj\['m'\]: map keys must be str or int"):
        encode({"m": {key: 1}})


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1])
def test_encode_refuses_ints_over_64_bits(value: int) -> None:
    with pytest.raises(ValueError, match=r"^obj\[1\]: int .* does not fit in 64 bits"):
        encode([0, value])


def test_encode_never_uses_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "dumps", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    decode(encode({"w": np.arange(4.0), "s": np.float32(1)}))


# --- decode refusals -----------------------------------------------------------------------------------

GOOD = encode({"w": np.arange(12, dtype="<f4").reshape(3, 4), "meta": {"n": 3}, "s": np.int16(2)})


def test_truncated_bodies_are_refused_at_every_cut() -> None:
    for cut in range(len(GOOD)):
        with pytest.raises(DecodeError):
            decode(GOOD[:cut])


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(DecodeError, match="trailing bytes"):
        decode(GOOD + b"\x00")


@given(junk=st.binary(max_size=200))
def test_garbage_raises_only_decode_error(junk: bytes) -> None:
    for body in (junk, b"\xdd" + junk, GOOD[:40] + junk):
        try:
            decode(body)
        except DecodeError:
            pass


@given(junk=st.binary(max_size=200), extra=st.lists(st.binary(max_size=16), max_size=3))
def test_garbage_structures_raise_only_decode_error(junk: bytes, extra: list[bytes]) -> None:
    header = b"\x93\xa3flb\x01" + junk  # right magic and version, then anything
    body = struct.pack(">BI", 0xDD, 1 + len(extra)) + _frame(header) + b"".join(map(_frame, extra))
    try:
        decode(body)
    except DecodeError:
        pass


@given(position=st.integers(min_value=0, max_value=len(GOOD) - 1), value=st.integers(0, 255))
def test_corrupted_bytes_raise_only_decode_error(position: int, value: int) -> None:
    body = bytearray(GOOD)
    body[position] = value
    try:
        decode(body)
    except DecodeError:
        pass


@pytest.mark.parametrize(
    "body, words",
    [
        (b"", "expected a msgpack array32"),
        (msgpack.packb([b"abc"]), "expected a msgpack array32"),  # fixarray: plain msgpack, not our layout
        (msgpack.packb({"v": 1}), "expected a msgpack array32"),
        (b"\xdd\x00\x00\x00\x00", "bad frame count"),
        (b"\xdd\x00\x00\x00\x01\xc4\x01\x00\x00\x00", "not a msgpack bin32"),
        (b"\xdd\x00\x00\x00\x01\xc6\x00\x00\x00\x09abc", "truncated body"),
        (_body(["nope", 1, {}]), "lacks the codec magic"),
        (_body(["flb", 1]), "lacks the codec magic"),
        (_body({"flb": 1}), "structure frame is not valid"),
        (_body(["flb", 2, {}]), "unsupported codec format version 2"),
        (_body(["flb", "1", {}]), "unsupported codec format version '1'"),
        (_body(["flb", 1, _placeholder(1, "<f4", [1])], b"\0" * 4), "out of range"),
        (_body(["flb", 1, _placeholder(-1, "<f4", [1])], b"\0" * 4), "out of range"),
        (_body(["flb", 1, {}], b"\0" * 4), r"array frames \[0\] are not referenced"),
        (_body(["flb", 1, [_placeholder(0, "<f4", [1])] * 2], b"\0" * 4), "referenced twice"),
        (_body(["flb", 1, _placeholder(0, "<f4", [2])], b"\0" * 4), "do not match dtype <f4 x shape"),
        (_body(["flb", 1, _placeholder(0, "<f4", [-1])], b"\0" * 4), "bad shape"),
        (_body(["flb", 1, _placeholder(0, "|O", [1])], b"\0" * 8), "refused dtype '|O'"),
        (_body(["flb", 1, _placeholder(0, "<U1", [1])], b"\0" * 4), "refused dtype '<U1'"),
        (_body(["flb", 1, _placeholder(0, "<M8[s]", [1])], b"\0" * 8), "refused dtype"),
        (_body(["flb", 1, _placeholder(0, "f4", [1])], b"\0" * 4), "bad dtype 'f4'"),
        (_body(["flb", 1, _placeholder(0, "nonsense", [1])], b"\0" * 4), "bad dtype"),
        (_body(["flb", 1, msgpack.ExtType(1, b"\xc1")], b"\0" * 4), "placeholder is not valid msgpack"),
        (_body(["flb", 1, msgpack.ExtType(2, msgpack.packb(["<f4", b"\0"]))]), "bad raw bytes"),
        (_body(["flb", 1, msgpack.ExtType(7, b"")]), "unknown msgpack ext type 7"),
        (_body(["flb", 1, msgpack.Timestamp(1, 0)]), r"timestamp \(ext type -1\)"),
        (_body(["flb", 1, [msgpack.Timestamp(1, 0)]]), r"timestamp \(ext type -1\)"),
        (_body(["flb", 1, {"t": msgpack.Timestamp(1, 0)}]), r"timestamp \(ext type -1\)"),
        (_body(["flb", 1, {1.5: 0}]), "map key 1.5 of type float"),
        (_body(["flb", 1, {b"k": 0}]), "map key b'k' of type bytes"),
        (_body(["flb", 1, _placeholder(0, "<f4", [1] * 70)], b"\0" * 4), "array 0: maximum supported dim"),
        (_body(["flb", 1, _placeholder(0, "<f4", [0, 2**62, 2**62])], b""), "array 0: array is too big"),
        (_body(["flb", 1, _placeholder(0, "<f4", [msgpack.ExtType(3, b"")])], b"\0" * 4), "bad shape"),
        (_body(["flb", 1, _placeholder(True, "<f4", [1])], b"\0" * 4), "array index True out of range"),
        (_body(["flb", 1, msgpack.ExtType(2, msgpack.packb([msgpack.Timestamp(1, 0), b""]))]), "bad dtype"),
        (_body(["flb", 1, msgpack.ExtType(2, msgpack.packb(["|O", b"\0" * 8]))]), "refused dtype"),
        (b"\xdd\x00\x00\x00\x01" + _frame(b"\x93\xa3flb\x01" + b"\x91" * 5000 + b"\x00"), "StackError"),
    ],
)
def test_decode_refusals(body: bytes, words: str) -> None:
    with pytest.raises(DecodeError, match=words):
        decode(body)


def test_extra_bytes_inside_structure_frame_are_refused() -> None:
    header = msgpack.packb(["flb", 1, {}]) + b"\x00"
    body = b"\xdd\x00\x00\x00\x01" + _frame(header)
    with pytest.raises(DecodeError, match="trailing bytes inside the structure frame"):
        decode(body)


def test_decode_refuses_object_dtype_from_a_crafted_body() -> None:
    body = _body(["flb", 1, {"w": _placeholder(0, "|O", [1])}], b"\x00" * 8)
    with pytest.raises(DecodeError, match="refused dtype"):
        decode(body)


def test_max_size_is_checked_before_parsing() -> None:
    with pytest.raises(DecodeError, match=r"body is 10 bytes, over max_size 9"):
        decode(b"garbage!!!", max_size=9)
    assert decode(GOOD, max_size=len(GOOD))["meta"] == {"n": 3}


@pytest.mark.parametrize("body", ["text", 12, None, memoryview(np.zeros((4, 4))[:, ::2])])
def test_non_buffers_are_refused(body: Any) -> None:
    with pytest.raises(DecodeError):
        decode(body)


def test_format_version_constant_matches_the_wire() -> None:
    header = msgpack.unpackb(msgpack.unpackb(encode(None))[0])
    assert header == ["flb", codec.FORMAT_VERSION, None]


def test_encode_parts_join_to_the_body_and_share_the_arrays_memory():
    weights = np.arange(1000, dtype=np.float32)
    obj = {"w": weights, "n": 3, "b": np.zeros((2, 3), dtype=np.int8)}
    parts = codec.encode_parts(obj)
    assert b"".join(parts) == codec.encode(obj)
    shared = [p for p in parts if isinstance(p, memoryview) and np.shares_memory(np.asarray(p), weights)]
    assert len(shared) == 1 and shared[0].nbytes == weights.nbytes
