"""The RabbitMQ I/O thread's operation queue (fl_broker/transport/rabbitmq/opqueue.py), without a broker."""

from __future__ import annotations

from typing import Any

import pika.exceptions as pe
import pytest

from fl_broker.errors import TransportError
from fl_broker.transport.rabbitmq import amqp
from fl_broker.transport.rabbitmq.opqueue import OpQueue


class Channels:
    """Stands in for the transport's channel: a name that reopening replaces."""

    def __init__(self) -> None:
        self.current = "channel-1"
        self.opened = 1

    def get(self) -> str:
        return self.current

    def reopen(self) -> None:
        self.opened += 1
        self.current = f"channel-{self.opened}"


def op(fn: Any) -> amqp.Op:
    return amqp.Op(fn, retry=False, error=TransportError)


def test_operations_after_one_the_broker_refused_run_on_the_reopened_channel() -> None:
    channels, seen = Channels(), []
    ops = OpQueue()

    def refused(ch: str) -> None:
        seen.append(ch)
        raise pe.ChannelClosedByBroker(406, "PRECONDITION_FAILED - inequivalent arg")

    first, second, third = op(refused), op(lambda ch: seen.append(ch) or "ok"), op(lambda ch: seen.append(ch))
    for each in (first, second, third):
        ops.put(each)  # handed over together: one run() takes them all
    ops.run(channels.get, channels.reopen)
    assert seen == ["channel-1", "channel-2", "channel-2"]  # not the channel the broker closed
    with pytest.raises(TransportError, match="406"):
        first.wait(1, lambda: True)
    assert second.wait(1, lambda: True) == "ok"
    assert ops.empty()
