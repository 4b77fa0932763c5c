"""The message-body codec: msgpack with numpy arrays carried as raw bytes. No pickle.

Body layout (valid msgpack): an array32 whose elements are all bin32.
  element 0   msgpack of [MAGIC, FORMAT_VERSION, structure]; each ndarray in the structure is an ext
              placeholder (code 1: [index, dtype.str, shape]), each numpy scalar is inline (code 2:
              [dtype.str, raw bytes]).
  element i   the raw C-order bytes of array i-1.
Arrays are framed by hand on both sides so their bytes are copied once on encode and never re-packed.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import msgpack
import numpy as np

from fl_broker.errors import DecodeError

__all__ = ["DecodeError", "FORMAT_VERSION", "decode", "encode", "encode_parts"]

MAGIC = "flb"
FORMAT_VERSION = 1

_EXT_ARRAY = 1
_EXT_SCALAR = 2
_ARRAY32 = 0xDD
_BIN32 = 0xC6
_FRAME = struct.Struct(">BI")
_MAX_FRAME = 2**32 - 1
_NUMERIC_KINDS = "biufc"
_PLAIN_TYPES = (str, bytes, float, bool, type(None))


class _Refused(Exception):
    """An unencodable value; `path` is filled in while unwinding so it costs nothing on success."""

    def __init__(self, message: str, error: type[Exception] = TypeError) -> None:
        super().__init__(message)
        self.message = message
        self.error = error
        self.path: list[str] = []


def encode(obj: Any, *, where: str = "obj") -> bytes:
    """Encode `obj` (nested dicts with str/int keys, lists/tuples, None, bool, int, float, str, bytes,
    numeric/bool numpy arrays and scalars) into a message body.

    Raises TypeError for an unsupported type or dtype and ValueError for an out-of-range value; the
    message names the path of the bad value, starting at `where` (e.g. "obj['w'][2]: ...").
    """
    return b"".join(encode_parts(obj, where=where))


def encode_parts(obj: Any, *, where: str = "obj") -> list[bytes | memoryview]:
    """The body `encode` makes, as its pieces in order, without joining them: each array's bytes are a view
    of the array itself, so a model-sized body never exists twice. The arrays must not change while the
    pieces are in use. Raises like `encode`."""
    arrays: list[np.ndarray] = []
    try:
        structure = _prepare(obj, arrays)
    except _Refused as exc:
        path = where + "".join(reversed(exc.path))
        raise exc.error(f"{path}: {exc.message}") from None
    header = msgpack.packb([MAGIC, FORMAT_VERSION, structure], use_bin_type=True)
    parts: list[bytes | memoryview] = [_FRAME.pack(_ARRAY32, len(arrays) + 1)]
    for chunk in [memoryview(header), *(_raw_bytes(a) for a in arrays)]:
        if chunk.nbytes > _MAX_FRAME:
            raise ValueError(f"{where}: a part of {chunk.nbytes} bytes is over the 4 GiB frame limit")
        parts += [_FRAME.pack(_BIN32, chunk.nbytes), chunk]
    return parts


def _prepare(obj: Any, arrays: list[np.ndarray]) -> Any:
    kind = type(obj)
    if kind in _PLAIN_TYPES:
        return obj
    if kind is int:
        if not -(2**63) <= obj < 2**64:
            raise _Refused(f"int {obj} does not fit in 64 bits", ValueError)
        return obj
    if isinstance(obj, np.ndarray):
        return _array_placeholder(obj, arrays)
    if isinstance(obj, np.generic):
        _check_dtype(obj.dtype, "scalars")
        return msgpack.ExtType(_EXT_SCALAR, msgpack.packb([obj.dtype.str, obj.tobytes()]))
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if type(key) is not str and type(key) is not int:
                raise _Refused(f"map keys must be str or int, got {type(key).__name__} {key!r}")
            try:
                out[key] = _prepare(value, arrays)
            except _Refused as exc:
                exc.path.append(f"[{key!r}]")
                raise
        return out
    if isinstance(obj, (list, tuple)):
        items = []
        for index, value in enumerate(obj):
            try:
                items.append(_prepare(value, arrays))
            except _Refused as exc:
                exc.path.append(f"[{index}]")
                raise
        return items
    raise _Refused(f"values of type {kind.__module__}.{kind.__qualname__} are not allowed")


def _check_dtype(dtype: np.dtype[Any], what: str) -> None:
    if dtype.kind not in _NUMERIC_KINDS:
        label = {"O": "object", "U": "str", "S": "bytes", "V": "void/structured", "M": "datetime"}
        name = label.get(dtype.kind, "timedelta" if dtype.kind == "m" else str(dtype))
        raise _Refused(f"{name} {what} are not allowed (dtype {dtype.str}); only bool and numeric dtypes")


def _array_placeholder(array: np.ndarray, arrays: list[np.ndarray]) -> msgpack.ExtType:
    if isinstance(array, np.ma.MaskedArray):
        raise _Refused("masked arrays are not allowed (the mask would be lost)")
    _check_dtype(array.dtype, "arrays")
    arrays.append(array)
    meta = [len(arrays) - 1, array.dtype.str, list(array.shape)]
    return msgpack.ExtType(_EXT_ARRAY, msgpack.packb(meta))


def _raw_bytes(array: np.ndarray) -> memoryview:
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    # A uint8 view exports every dtype (float16, longdouble, '>f4' ...) as plain bytes.
    return np.asarray(array).reshape(-1).view(np.uint8).data


def decode(data: bytes | bytearray | memoryview, *, max_size: int | None = None) -> Any:
    """Decode a body made by `encode`. Every failure raises DecodeError saying what was wrong.

    Arrays come back writable. A writable body (bytearray, writable memoryview) is not copied: the arrays
    are views into it, so the caller must not reuse that buffer while the arrays are alive. An immutable
    body (bytes) is copied once per array. Arrays may be unaligned views; numpy handles that correctly.
    """
    try:
        view = memoryview(data).cast("B")
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"body is not a contiguous bytes-like object: {exc}") from None
    if max_size is not None and view.nbytes > max_size:
        raise DecodeError(f"body is {view.nbytes} bytes, over max_size {max_size}")
    frames = _split_frames(view)
    arrays = _ArrayTable(frames[1:], copy=view.readonly)
    obj = _unpack_header(frames[0], arrays)
    unused = arrays.unused()
    if unused:
        raise DecodeError(f"array frames {unused} are not referenced by the structure")
    return obj


def _split_frames(view: memoryview) -> list[memoryview]:
    size = view.nbytes
    if size < 5 or view[0] != _ARRAY32:
        raise DecodeError("not an fl-broker body: expected a msgpack array32 (0xdd) of bin32 frames")
    _, count = _FRAME.unpack_from(view, 0)
    if count < 1 or count * 5 > size - 5:
        raise DecodeError(f"bad frame count {count} for a body of {size} bytes (truncated or garbage)")
    frames, offset = [], 5
    for index in range(count):
        if offset + 5 > size:
            raise DecodeError(f"truncated body: frame {index} header missing at byte {offset}")
        marker, length = _FRAME.unpack_from(view, offset)
        if marker != _BIN32:
            raise DecodeError(f"frame {index} at byte {offset} is not a msgpack bin32 (0x{marker:02x})")
        offset += 5
        if offset + length > size:
            raise DecodeError(f"truncated body: frame {index} needs {length} bytes, {size - offset} left")
        frames.append(view[offset : offset + length])
        offset += length
    if offset != size:
        raise DecodeError(f"{size - offset} trailing bytes after the last frame")
    return frames


def _unpack_header(frame: memoryview, arrays: _ArrayTable) -> Any:
    unpacker = msgpack.Unpacker(
        raw=False,
        strict_map_key=False,  # int map keys are allowed; _pairs refuses every other non-str key
        ext_hook=arrays.ext_hook,
        object_pairs_hook=_pairs,
        list_hook=_items,
        max_buffer_size=max(frame.nbytes, 1),
    )
    try:
        unpacker.feed(frame)
        if unpacker.read_array_header() != 3 or not _same(unpacker.unpack(), MAGIC):
            raise DecodeError("not an fl-broker body: structure frame lacks the codec magic")
        version = unpacker.unpack()
        if not _same(version, FORMAT_VERSION):
            raise DecodeError(f"unsupported codec format version {version!r}, expected {FORMAT_VERSION}")
        obj = _items([unpacker.unpack()])[0]
        if unpacker.tell() != frame.nbytes:
            raise DecodeError("trailing bytes inside the structure frame")
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises many types (ValueError, OutOfData, StackError ...)
        raise DecodeError(f"structure frame is not valid: {type(exc).__name__}: {exc}") from None
    return obj


def _same(value: Any, expected: object) -> bool:
    return type(value) is type(expected) and value == expected


def _items(items: list[Any]) -> list[Any]:
    # msgpack turns ext -1 into a Timestamp without calling ext_hook, so containers refuse it here.
    if any(type(item) is msgpack.Timestamp for item in items):
        raise DecodeError("msgpack timestamp (ext type -1) is not allowed")
    return items


def _pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    for key, _ in pairs:
        if type(key) is not str and type(key) is not int:
            raise DecodeError(f"map key {key!r:.100} of type {type(key).__name__} is not allowed")
    _items([value for _, value in pairs])
    return dict(pairs)


class _ArrayTable:
    """The array frames of one body, handed out once each as the structure references them."""

    def __init__(self, frames: list[memoryview], *, copy: bool) -> None:
        self.frames = frames
        self.copy = copy
        self.used = [False] * len(frames)

    def ext_hook(self, code: int, payload: bytes) -> Any:
        if code == _EXT_ARRAY:
            return self._array(payload)
        if code == _EXT_SCALAR:
            return _scalar(payload)
        raise DecodeError(f"unknown msgpack ext type {code}")

    def unused(self) -> list[int]:
        return [index for index, used in enumerate(self.used) if not used]

    def _array(self, payload: bytes) -> np.ndarray:
        index, dtype_str, shape = _unpack_list(payload, 3, "array placeholder")
        if type(index) is not int or not 0 <= index < len(self.frames):
            raise DecodeError(f"array index {index!r} out of range ({len(self.frames)} array frames)")
        if self.used[index]:
            raise DecodeError(f"array index {index} referenced twice")
        self.used[index] = True
        dtype = _dtype(dtype_str)
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise DecodeError(f"array {index}: bad shape {shape!r:.100}")
        count = math.prod(shape)
        frame = self.frames[index]
        if count * dtype.itemsize != frame.nbytes:
            raise DecodeError(
                f"array {index}: {frame.nbytes} bytes do not match dtype {dtype.str} x shape {tuple(shape)}"
            )
        try:
            array = np.frombuffer(frame, dtype=dtype, count=count).reshape(shape)
        except (ValueError, OverflowError) as exc:
            raise DecodeError(f"array {index}: {exc}") from None
        return array.copy() if self.copy else array


def _scalar(payload: bytes) -> np.generic:
    dtype_str, raw = _unpack_list(payload, 2, "numpy scalar")
    dtype = _dtype(dtype_str)
    if type(raw) is not bytes or len(raw) != dtype.itemsize:
        raise DecodeError(f"numpy scalar of dtype {dtype.str}: bad raw bytes {raw!r:.100}")
    value: np.generic = np.frombuffer(raw, dtype=dtype, count=1)[0]
    return value


def _unpack_list(payload: bytes, length: int, what: str) -> list[Any]:
    # Nested ext types come back as ExtType/Timestamp objects, which the callers' type checks refuse.
    try:
        items = msgpack.unpackb(payload, raw=False)
    except Exception as exc:
        raise DecodeError(f"{what} is not valid msgpack: {exc}") from None
    if not isinstance(items, list) or len(items) != length:
        raise DecodeError(f"{what} must be a list of {length} items, got {items!r:.100}")
    return items


def _dtype(dtype_str: Any) -> np.dtype[Any]:
    try:
        dtype = np.dtype(dtype_str) if type(dtype_str) is str else None
    except Exception:
        dtype = None
    if dtype is None or dtype.str != dtype_str:
        raise DecodeError(f"bad dtype {dtype_str!r}")
    if dtype.kind not in _NUMERIC_KINDS:
        raise DecodeError(f"refused dtype {dtype_str!r}: only bool and numeric dtypes are allowed")
    return dtype
