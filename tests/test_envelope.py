from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fl_broker.errors import DecodeError
from fl_broker.wire import codec
from fl_broker.wire.envelope import (
    ENVELOPE_VERSION,
    Envelope,
    decode_envelope,
    encode_envelope,
    shareable_from_dict,
    shareable_to_dict,
)
from fl_broker.wire.messages import DXO, DataKind, ReturnCode, Shareable


def make_shareable() -> Shareable:
    dxo = DXO(
        data_kind=DataKind.WEIGHTS,
        data={"numpy_key": np.arange(1, 10, dtype=np.float32).reshape(3, 3)},
        meta={"NUM_STEPS_CURRENT_ROUND": 1, "nested": {0: [1.5, None]}},
    )
    return Shareable(
        task_name="train",
        task_id="t-1",
        return_code=ReturnCode.OK,
        headers={"current_round": 3, "num_rounds": 10},
        cookie_jar={"contribution_round": 3},
        peer_props={"site": "site-1"},
        dxo=dxo,
    )


def raw_envelope() -> dict[str, Any]:
    """A valid envelope in map form; tests break one thing at a time."""
    return {
        "v": ENVELOPE_VERSION,
        "kind": "result",
        "run": 1,
        "fields": {"round": 3},
        "shareable": shareable_to_dict(make_shareable()),
    }


def assert_same_shareable(got: Shareable | None, want: Shareable) -> None:
    assert got is not None and want.dxo is not None and got.dxo is not None
    assert (got.task_name, got.task_id, got.return_code) == (want.task_name, want.task_id, want.return_code)
    assert (got.headers, got.cookie_jar, got.peer_props) == (want.headers, want.cookie_jar, want.peer_props)
    assert got.dxo.data_kind is want.dxo.data_kind and got.dxo.meta == want.dxo.meta
    np.testing.assert_array_equal(got.dxo.data["numpy_key"], want.dxo.data["numpy_key"])
    assert got.dxo.data["numpy_key"].dtype == np.float32


# --- round trip ----------------------------------------------------------------------------------------


def test_round_trip_without_shareable() -> None:
    env = Envelope(kind="event", run=2, fields={"topic": "run.2.round.1.done", "n": [1, 2]})
    assert decode_envelope(encode_envelope(env)) == env


def test_round_trip_with_defaults() -> None:
    assert decode_envelope(encode_envelope(Envelope(kind="request"))) == Envelope(kind="request")


def test_round_trip_with_shareable_without_dxo() -> None:
    env = Envelope(kind="reply", run=1, shareable=Shareable(return_code=ReturnCode.TASK_ABORTED))
    assert decode_envelope(encode_envelope(env)) == env


@pytest.mark.parametrize("body_type", [bytes, bytearray])
def test_round_trip_with_dxo_gives_writable_arrays(body_type: type) -> None:
    want = make_shareable()
    env = decode_envelope(body_type(encode_envelope(Envelope(kind="task", run=1, shareable=want))))
    assert (env.kind, env.run, env.fields) == ("task", 1, {})
    assert_same_shareable(env.shareable, want)
    assert env.shareable is not None and env.shareable.dxo is not None
    weights = env.shareable.dxo.data["numpy_key"]
    weights += 1  # the trainer's in-place update
    assert weights[2, 2] == 10


def test_max_size_is_passed_to_the_codec() -> None:
    body = encode_envelope(Envelope(kind="task"))
    with pytest.raises(DecodeError, match="over max_size"):
        decode_envelope(body, max_size=len(body) - 1)


def test_shareable_dict_round_trip() -> None:
    want = make_shareable()
    assert_same_shareable(shareable_from_dict(shareable_to_dict(want)), want)


def test_shareable_dict_is_the_documented_shape() -> None:
    d = shareable_to_dict(make_shareable())
    assert set(d) == {"task_name", "task_id", "rc", "headers", "cookie_jar", "peer_props", "dxo"}
    assert d["rc"] == "OK" and type(d["rc"]) is str
    assert set(d["dxo"]) == {"kind", "data", "meta"} and type(d["dxo"]["kind"]) is str


# --- encode refusals -----------------------------------------------------------------------------------


def test_encode_names_the_path_of_an_unencodable_value() -> None:
    shareable = make_shareable()
    assert shareable.dxo is not None
    shareable.dxo.data["bad"] = np.array([object()])
    with pytest.raises(TypeError, match=r"^envelope\['shareable'\]\['dxo'\]\['data'\]\['bad'\]: object"):
        encode_envelope(Envelope(kind="result", shareable=shareable))


@pytest.mark.parametrize(
    "env, words",
    [
        (Envelope(kind=""), "envelope.kind"),
        (Envelope(kind=3), "envelope.kind"),  # type: ignore[arg-type]
        (Envelope(kind="task", run="1"), "envelope.run"),  # type: ignore[arg-type]
        (Envelope(kind="task", run=True), "envelope.run"),
        (Envelope(kind="task", fields={1: "x"}), "envelope.fields"),  # type: ignore[dict-item]
    ],
)
def test_encode_refuses_bad_envelopes(env: Envelope, words: str) -> None:
    with pytest.raises(TypeError, match=words):
        encode_envelope(env)


# --- decode refusals -----------------------------------------------------------------------------------


def _set(raw: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        raw = raw[key]
    if value is _DELETE:
        del raw[last]
    else:
        raw[last] = value


_DELETE = object()

REFUSALS = [
    ("v", 2, r"^envelope\.v: expected 1, got 2$"),
    ("v", "1", r"^envelope\.v: expected 1, got '1'$"),
    ("v", True, r"^envelope\.v: expected 1, got True$"),
    ("v", _DELETE, r"^envelope: missing key\(s\) 'v'$"),
    ("kind", _DELETE, r"^envelope: missing key\(s\) 'kind'$"),
    ("kind", 5, r"^envelope\.kind: expected str, got int$"),
    ("kind", "", r"^envelope\.kind: must not be empty$"),
    ("run", "1", r"^envelope\.run: expected int, got str$"),
    ("run", 1.0, r"^envelope\.run: expected int, got float$"),
    ("run", _DELETE, r"^envelope: missing key\(s\) 'run'$"),
    ("fields", [], r"^envelope\.fields: expected a map, got list$"),
    ("fields", {1: 2}, r"^envelope\.fields: keys must be str, got 1$"),
    ("extra", 1, r"^envelope: unexpected key\(s\) 'extra'$"),
    ("shareable", [], r"^shareable: expected a map, got list$"),
    ("shareable.rc", "NOPE", r"^shareable\.rc: unknown return code 'NOPE'$"),
    ("shareable.rc", 0, r"^shareable\.rc: expected str, got int$"),
    ("shareable.task_name", None, r"^shareable\.task_name: expected str, got NoneType$"),
    ("shareable.task_id", b"x", r"^shareable\.task_id: expected str, got bytes$"),
    ("shareable.headers", None, r"^shareable\.headers: expected a map, got NoneType$"),
    ("shareable.headers", {3: 1}, r"^shareable\.headers: keys must be str, got 3$"),
    ("shareable.cookie_jar", "x", r"^shareable\.cookie_jar: expected a map, got str$"),
    ("shareable.peer_props", [1], r"^shareable\.peer_props: expected a map, got list$"),
    ("shareable.peer_props", _DELETE, r"^shareable: missing key\(s\) 'peer_props'$"),
    ("shareable.more", 1, r"^shareable: unexpected key\(s\) 'more'$"),
    ("shareable.dxo", "x", r"^shareable\.dxo: expected a map, got str$"),
    ("shareable.dxo.kind", "X", r"^shareable\.dxo\.kind: unknown data kind 'X'$"),
    ("shareable.dxo.kind", None, r"^shareable\.dxo\.kind: expected str, got NoneType$"),
    ("shareable.dxo.data", [1], r"^shareable\.dxo\.data: expected a map, got list$"),
    ("shareable.dxo.data", {0: 1}, r"^shareable\.dxo\.data: keys must be str, got 0$"),
    ("shareable.dxo.meta", None, r"^shareable\.dxo\.meta: expected a map, got NoneType$"),
    ("shareable.dxo.meta", _DELETE, r"^shareable\.dxo: missing key\(s\) 'meta'$"),
    ("shareable.dxo.extra", 1, r"^shareable\.dxo: unexpected key\(s\) 'extra'$"),
]


@pytest.mark.parametrize("path, value, pattern", REFUSALS, ids=[f"{p}={v!r}" for p, v, _ in REFUSALS])
def test_decode_refuses_schema_errors_naming_the_path(path: str, value: Any, pattern: str) -> None:
    raw = raw_envelope()
    _set(raw, path, value)
    with pytest.raises(DecodeError, match=pattern):
        decode_envelope(codec.encode(raw))


@pytest.mark.parametrize("body", [codec.encode([1, 2]), codec.encode(None), codec.encode("task")])
def test_decode_refuses_a_body_that_is_not_a_map(body: bytes) -> None:
    with pytest.raises(DecodeError, match=r"^envelope: expected a map"):
        decode_envelope(body)


def test_decode_passes_codec_errors_through() -> None:
    with pytest.raises(DecodeError, match="array32"):
        decode_envelope(b"{}")


def test_shareable_from_dict_uses_the_given_path() -> None:
    d = shareable_to_dict(make_shareable())
    d["dxo"]["kind"] = "X"
    with pytest.raises(DecodeError, match=r"^reply\.shareable\.dxo\.kind: unknown data kind 'X'$"):
        shareable_from_dict(d, where="reply.shareable")
