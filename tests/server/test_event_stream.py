"""Lifecycle events on fl.event: routing keys, order, and a stream that never holds up or stops a run."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from fl_broker.errors import PublishFailed
from fl_broker.fl.events import Event, EventType
from fl_broker.protocol.events import EventMessage
from fl_broker.server.event_stream import EventStream
from fl_broker.transport.memory import MemoryBroker
from fl_broker.wire import names
from fl_broker.wire.envelope import decode_envelope
from tests.support.deliveries import delivery_of


@pytest.fixture
def broker() -> MemoryBroker:
    broker = MemoryBroker.named(f"test-{uuid.uuid4().hex}")
    broker.connect(user="server").declare(names.server_topology())
    return broker


def test_events_are_published_in_order_with_their_fields(broker):
    stream = EventStream(broker.connect(user="server"))
    for r in range(5):
        stream(Event(EventType.ROUND_DONE, run=1, round=r, data={"accepted": 2}))
    stream.close()
    stream = EventStream(broker.connect(user="server"))
    stream(Event(EventType.TRAINING_FINISHED, run=1, round=4))
    stream(Event(EventType.RUN_ABORTED, run=2))
    stream.close()
    published = broker.messages(names.EVENT_HISTORY_QUEUE)
    assert [m.routing_key for m in published] == [f"run.1.round.{r}.done" for r in range(5)] + [
        "run.1.round.4.training_finished",
        "run.2.run_aborted",
    ]
    first = decode_envelope(published[0].body)
    assert (first.kind, first.run) == ("event", 1)
    assert {k: first.fields[k] for k in ("type", "round", "data")} == {
        "type": "round_done",
        "round": 0,
        "data": {"accepted": 2},
    }
    assert abs(first.fields["time"] - time.time()) < 60


class BlockingTransport:
    """Publishes only when let go; fails the publishes it is told to."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.entered = threading.Event()
        self.published: list[str] = []
        self.fail_keys: set[str] = set()
        self.batches: list[list[str]] = []  # the routing keys published inside each batch() block

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        start = len(self.published)
        yield
        self.batches.append(self.published[start:])

    def publish(self, exchange: str, routing_key: str, body: bytes, **kwargs: object) -> None:
        self.entered.set()
        self.go.wait(10)
        if routing_key in self.fail_keys:
            raise PublishFailed("the broker refused it")
        self.published.append(routing_key)


def test_a_backed_up_stream_drops_events_instead_of_blocking_the_run(caplog):
    transport = BlockingTransport()
    stream = EventStream(transport, capacity=1)  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING, logger="fl_broker.server.event_stream")
    started = time.monotonic()
    stream(Event(EventType.ROUND_DONE, run=1, round=0))
    assert transport.entered.wait(5)  # round 0 is being published (blocked)
    for r in range(1, 4):  # round 1 waits in the queue, the other two find no room
        stream(Event(EventType.ROUND_DONE, run=1, round=r))
    assert time.monotonic() - started < 5
    assert sum("backed up" in r.getMessage() for r in caplog.records) == 2
    transport.go.set()
    stream.close()
    assert transport.published == ["run.1.round.0.done", "run.1.round.1.done"]


def test_a_failed_publish_is_logged_and_the_stream_goes_on(caplog):
    transport = BlockingTransport()
    transport.go.set()
    transport.fail_keys = {"run.1.round.0.done"}
    caplog.set_level(logging.WARNING, logger="fl_broker.server.event_stream")
    stream = EventStream(transport)  # type: ignore[arg-type]
    stream(Event(EventType.ROUND_DONE, run=1, round=0))
    stream(Event(EventType.ROUND_DONE, run=1, round=1))
    stream.close()
    assert transport.published == ["run.1.round.1.done"]
    assert any("could not publish event run.1.round.0.done" in r.getMessage() for r in caplog.records)


def test_what_the_stream_publishes_is_what_the_admins_end_reads(broker):
    stream = EventStream(broker.connect(user="server"))
    stream(Event(EventType.TRAINING_STARTED, run=1, data={"num_rounds": 2}))
    stream(Event(EventType.ROUND_STARTED, run=1, round=0))
    stream.close()
    events = [EventMessage.decode_delivery(delivery_of(m)) for m in broker.messages(names.EVENT_HISTORY_QUEUE)]
    assert [(e.run, e.type, e.round, e.data) for e in events] == [
        (1, "training_started", None, {"num_rounds": 2}),
        (1, "round_started", 0, {}),
    ]
    assert events[0].time <= events[1].time


def test_published_events_carry_readable_headers(broker):
    stream = EventStream(broker.connect(user="server"))
    stream(Event(EventType.ROUND_DONE, run=4, round=2, data={"accepted": 1, "metrics": {"loss": 0.5}}))
    stream.close()
    [message] = broker.messages(names.EVENT_HISTORY_QUEUE)
    assert message.headers["x-fl-summary"] == "run 4 round 2: round_done; accepted=1; metrics={loss=0.5}"
    assert (message.headers["x-fl-event"], message.headers["x-fl-run"], message.headers["x-fl-round"]) == (
        "round_done",
        4,
        2,
    )
    assert message.headers["x-fl-metrics"] == {"loss": "0.5"}


def test_a_burst_of_events_is_handed_to_the_transport_in_one_batch_in_order():
    transport = BlockingTransport()
    transport.go.set()
    stream = EventStream(transport, gather=1.0)  # type: ignore[arg-type]  # a burst: fired well within 1 s
    for kind in ("before_aggregation", "after_aggregation", "before_shareable_to_learnable"):
        stream(Event(kind, run=1, round=3))
    stream.close()
    keys = [
        f"run.1.round.3.{kind}" for kind in ("before_aggregation", "after_aggregation", "before_shareable_to_learnable")
    ]
    assert transport.batches == [keys]
    assert transport.published == keys
