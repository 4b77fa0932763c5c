"""Bad input is refused with a clear reason, dead-lettered, and never stops the server or the run."""

from __future__ import annotations

import shutil
import time

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fl_broker.transport import TransportOptions
from fl_broker.wire import codec, names
from fl_broker.wire.envelope import Envelope, encode_envelope
from fl_broker.wire.messages import DXO, DataKind
from tests.server.test_engine import Federation, upload
from tests.support.federation import make_app

INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)


@pytest.fixture
def fed(tmp_path):
    federation = Federation(tmp_path, ["site-1", "site-2"])
    federation.wait_registered(2)
    federation.intruder = federation.broker.connect(user="site-1")
    yield federation
    federation.close()


def dead_letters(fed) -> list[tuple[str, str]]:
    """(source queue, reason) of every message in the dead-letter queue."""
    return [
        (m.headers.get(names.REJECT_QUEUE_HEADER), m.headers.get(names.REJECT_REASON_HEADER))
        for m in fed.broker.messages(names.DEAD_LETTER_QUEUE)
    ]


def wait_dead_letter(fed, fragment: str, timeout: float = 5) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for queue, reason in dead_letters(fed):
            if fragment in (reason or ""):
                return queue, reason
        time.sleep(0.02)
    raise AssertionError(f"no dead letter mentioning {fragment!r}: {dead_letters(fed)}")


def result_body(run: int, round_: int, site: str, data: dict, task_id: str | None = None) -> bytes:
    shareable = DXO(DataKind.WEIGHTS, data, {"NUM_STEPS_CURRENT_ROUND": 1}).to_shareable()
    shareable.task_id = task_id or f"run{run}-train-round{round_}"
    shareable.cookie_jar = {"contribution_round": round_}
    return encode_envelope(Envelope("result", run, {"site": site, "round": round_}, shareable))


@pytest.mark.parametrize(
    "body, headers_fragment",
    [
        (b"\x00garbage\xff" * 5, "not an fl-broker body"),
        (msgpack.packb({"v": 1, "kind": "result"}), ""),
        (encode_envelope(Envelope("request", 1, {"command": "x"})), "expected 'result'"),
        (encode_envelope(Envelope("result", 1, {"site": "site-1"})), "needs fields.site"),
    ],
)
def test_undecodable_results_are_dead_lettered_with_the_reason(fed, body, headers_fragment):
    fed.intruder.publish(names.RESULT_EXCHANGE, names.SERVER, body)
    queue, reason = wait_dead_letter(fed, headers_fragment)
    assert queue == names.SERVER_RESULT_QUEUE and reason
    assert fed.call("check_status", target="server")["engine_status"] == "stopped"  # still serving


def test_garbage_on_the_control_queue_is_dead_lettered(fed):
    fed.intruder.publish(names.CONTROL_EXCHANGE, names.SERVER, b"\x93\x01\x02")
    queue, reason = wait_dead_letter(fed, "")
    assert queue == names.SERVER_CONTROL_QUEUE and reason
    assert fed.call("check_status", target="server")["engine_status"] == "stopped"


def test_a_body_over_the_receivers_limit_is_dead_lettered(tmp_path):
    from fl_broker.transport.memory import MemoryBroker

    broker = MemoryBroker()
    small = broker.connect(user="server", options=TransportOptions(max_body_size=1024))
    small.declare(names.server_topology())
    small.consume(names.SERVER_RESULT_QUEUE, lambda d: d.ack())
    broker.connect(user="site-1").publish(names.RESULT_EXCHANGE, names.SERVER, b"x" * 4096)
    deadline = time.monotonic() + 5
    while not broker.messages(names.DEAD_LETTER_QUEUE):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert "over max_body_size" in broker.messages(names.DEAD_LETTER_QUEUE)[0].headers[names.REJECT_REASON_HEADER]
    small.close()


def start_slow_run(fed, tmp_path, sleep_time=0.3, rounds=4):
    app = make_app(tmp_path / "slowapp", server_args={"num_rounds": rounds}, client_args={"sleep_time": sleep_time})
    upload(fed, app, "app")
    fed.call("set_run_number", run=1)
    fed.call("deploy_app", app="app", target="all")
    fed.call("start_app", target="all")
    deadline = time.monotonic() + 10
    while fed.call("check_status", target="server")["phase"] != "gathering":
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.parametrize(
    "data, run, task_id, fragment",
    [
        ({"numpy_key": np.zeros((2, 2), np.float32)}, 1, None, "has shape (2, 2)"),
        ({"numpy_key": np.zeros((3, 3), np.float64)}, 1, None, "has dtype float64"),
        ({"numpy_key": np.full((3, 3), np.nan, np.float32)}, 1, None, "NaN or Inf"),
        ({"numpy_key": np.full((3, 3), np.inf, np.float32)}, 1, None, "NaN or Inf"),
        ({"other": np.zeros((3, 3), np.float32)}, 1, None, "not in the global model"),
        ({"numpy_key": np.zeros((3, 3), np.float32)}, 7, None, "result for run 7"),
        ({"numpy_key": np.zeros((3, 3), np.float32)}, 1, "bogus-task", "not the current task"),
    ],
)
def test_bad_results_during_a_run_are_refused_and_the_run_stays_exact(fed, tmp_path, data, run, task_id, fragment):
    start_slow_run(fed, tmp_path)
    fed.intruder.publish(names.RESULT_EXCHANGE, names.SERVER, result_body(run, 0, "site-1", data, task_id))
    wait_dead_letter(fed, fragment)
    status = fed.wait_stopped()
    assert status["phase"] == "finished"
    np.testing.assert_array_equal(np.load(fed.root / "server" / "run_1" / "models" / "server.npy"), INITIAL + 4)


def test_a_duplicated_result_is_counted_once(fed, tmp_path):
    start_slow_run(fed, tmp_path, sleep_time=0.5, rounds=2)
    # an exact copy of what site-1 will send in round 0, delivered twice before the real one
    twice = result_body(1, 0, "site-1", {"numpy_key": INITIAL + 1})
    fed.intruder.publish(names.RESULT_EXCHANGE, names.SERVER, twice)
    fed.intruder.publish(names.RESULT_EXCHANGE, names.SERVER, twice)
    wait_dead_letter(fed, "second result from site-1")
    assert fed.wait_stopped()["phase"] == "finished"
    np.testing.assert_array_equal(np.load(fed.root / "server" / "run_1" / "models" / "server.npy"), INITIAL + 2)


int64s = st.integers(-(2**63), 2**63 - 1)
bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda obj: msgpack.packb(obj),
        st.recursive(
            st.none() | st.booleans() | int64s | st.text(max_size=10) | st.binary(max_size=10),
            lambda children: (
                st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
            ),
            max_leaves=10,
        ),
    ),
    st.builds(
        # the envelope's map form, so kinds no fl-broker program sends ("x") are thrown too
        lambda kind, run, fields: codec.encode({"v": 1, "kind": kind, "run": run, "fields": fields, "shareable": None}),
        st.sampled_from(["result", "request", "reply", "task", "x"]),
        st.integers(0, 3),
        st.dictionaries(st.sampled_from(["site", "round", "command", "args"]), int64s | st.text(max_size=8)),
    ),
)


def test_fuzzed_bodies_never_stop_the_server_or_the_run(fed, tmp_path):
    start_slow_run(fed, tmp_path, sleep_time=0.05, rounds=10)
    sent = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=bodies, to_control=st.booleans())
    def throw(body, to_control):
        key = (names.CONTROL_EXCHANGE, names.SERVER) if to_control else (names.RESULT_EXCHANGE, names.SERVER)
        fed.intruder.publish(*key, body)
        sent.append(body)

    throw()
    assert len(sent) >= 100
    status = fed.wait_stopped(timeout=60)
    assert status["phase"] == "finished"
    np.testing.assert_array_equal(np.load(fed.root / "server" / "run_1" / "models" / "server.npy"), INITIAL + 10)
    assert fed.call("check_status", target="server")["engine_status"] == "stopped"
    shutil.rmtree(tmp_path / "slowapp", ignore_errors=True)


@pytest.mark.parametrize("route", [names.RESULT_EXCHANGE, names.CONTROL_EXCHANGE])
def test_a_wrong_content_type_is_dead_lettered(fed, route):
    from fl_broker.transport.memory import QueuedMessage

    # A foreign publisher (not fl-broker's transport, which always sets application/msgpack).
    body = result_body(1, 0, "site-1", {"numpy_key": INITIAL}) if route == names.RESULT_EXCHANGE else b"{}"
    message = QueuedMessage(
        body=body,
        exchange=route,
        routing_key=names.SERVER,
        headers={},
        message_id="m1",
        correlation_id=None,
        reply_to=None,
        user_id="site-1",
        timestamp=0,
        content_type="application/json",
    )
    with fed.broker.lock:
        fed.broker.publish_message(message)
        fed.broker.dispatch(
            fed.broker.queues[
                names.SERVER_RESULT_QUEUE if route == names.RESULT_EXCHANGE else names.SERVER_CONTROL_QUEUE
            ]
        )
    wait_dead_letter(fed, "content type 'application/json'")
    assert fed.call("check_status", target="server")["engine_status"] == "stopped"
