"""Transport.hold_lock, the exclusive queue that decides which server is active: one holder at a time on both
transports; on RabbitMQ, a holder whose connection was lost and whose lock was taken meanwhile stops for good
(fencing) instead of resuming its consumers."""

from __future__ import annotations

import threading
import time

import pytest

from fl_broker.errors import LockLost
from fl_broker.wire import names

from .conftest import BrokerHarness

LOCK = "fl.test.lock"
WORK = names.Topology(exchanges=(), queues=(names.QueueSpec("test.locks.work"),))


def never(reason: str) -> None:
    raise AssertionError(f"lock lost: {reason}")


def wait_until(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_one_transport_at_a_time_holds_a_lock_and_closing_it_frees_the_lock(broker: BrokerHarness) -> None:
    first, second = broker.connect(), broker.connect()
    assert first.hold_lock(LOCK, never)
    assert first.hold_lock(LOCK, never)  # asking again while holding it: still held
    assert not second.hold_lock(LOCK, never)
    first.close()
    wait_until(lambda: second.hold_lock(LOCK, never), what="the lock to be free")
    assert not broker.connect().hold_lock(LOCK, never)


@pytest.mark.rabbitmq
def test_a_reconnect_takes_the_lock_again_and_consumers_resume(rabbitmq_node, rabbitmq_url) -> None:
    from fl_broker.transport import connect

    holder = connect(rabbitmq_url)
    try:
        holder.declare(WORK)
        assert holder.hold_lock(LOCK, never)
        holder.consume("test.locks.work", lambda d: d.ack())
        vhost = rabbitmq_url.rsplit("/", 1)[1]
        rabbitmq_node.close_connections(vhost, expect=1)
        # Back on a new connection: the lock is this transport's again, and its consumer was resumed.
        wait_until(lambda: holder.consumer_count("test.locks.work") == 1, what="the consumer to resume")
        other = connect(rabbitmq_url)
        try:
            assert not other.hold_lock(LOCK, never)
        finally:
            other.close()
        assert holder.failure is None
    finally:
        holder.close()


@pytest.mark.rabbitmq
def test_a_holder_whose_lock_was_taken_while_it_was_away_stops_without_resuming(rabbitmq_node, rabbitmq_url) -> None:
    from fl_broker.transport import TransportOptions, connect

    vhost = rabbitmq_url.rsplit("/", 1)[1]
    lost: list[str] = []
    holder = connect(rabbitmq_url)
    holder.declare(WORK)
    assert holder.hold_lock(LOCK, lost.append)
    holder.consume("test.locks.work", lambda d: d.ack())
    # Hold the holder's I/O thread (as a hung process would be held) while the broker drops its connection
    # and another connection takes the lock.
    release = threading.Event()
    busy = threading.Thread(target=lambda: holder.call(lambda ch: release.wait(30), retry=False, what="hang"))
    busy.start()
    rabbitmq_node.close_connections(vhost, expect=1)
    rival = connect(rabbitmq_url, options=TransportOptions(connect_attempts=3))
    try:
        wait_until(lambda: rival.hold_lock(LOCK, never), what="the rival to take the lock")
        release.set()
        busy.join(10)
        wait_until(lambda: bool(lost), what="the holder to notice")
        assert "another connection took the lock 'fl.test.lock'" in lost[0]
        assert holder.failure is not None and "fl.test.lock" in holder.failure
        with pytest.raises(LockLost):
            holder.publish("", "test.locks.work", b"x")
        time.sleep(1)
        assert rival.consumer_count("test.locks.work") == 0  # the holder's consumer never came back
    finally:
        release.set()
        holder.close()
        rival.close()
