"""Subscriptions the broker took away, and their way back (all on the transport's I/O thread).

RabbitMQ cancels a consumer itself (basic.cancel; pika reports it through the channel's on-cancel
callback) when its queue is deleted or the node holding it is lost; the connection and channel stay open,
so nothing else would notice and the program would go on running without receiving. Such a subscription
is *suspended*: once a second the queue is looked up (a passive declare on a throwaway channel, so a
missing queue's 404 does not close the channel that holds deliveries) and, where this program declares
that queue itself, declared again; when the queue is there the consumer is registered again. While it is
not, the reason the broker gives is logged as an error every 30 s."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingChannel

if TYPE_CHECKING:
    from fl_broker.transport.rabbitmq.connection import RabbitMQTransport
    from fl_broker.transport.rabbitmq.consumer import RabbitSubscription

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
COMPLAIN_SECONDS = 30.0


class Resumer:
    """The transport's suspended subscriptions: since when, the next try, and the last complaint."""

    def __init__(self, transport: RabbitMQTransport) -> None:
        self.transport = transport
        self._suspended: dict[RabbitSubscription, list[float]] = {}  # sub -> [since, next try, last complaint]

    def on_cancel(self, frame: Any) -> None:
        """(pika callback) The broker cancelled one of our consumers: suspend its subscription."""
        tag = frame.method.consumer_tag
        self.transport.interruptions += 1  # e.g. the queue's node was lost, and its non-persistent messages
        for sub in self.transport.subscriptions():
            if sub.consumer_tag == tag:
                sub.consumer_tag_lost()
                log.warning("the broker cancelled the consumer of %s (queue deleted or its node lost); "
                            "consuming it again once it is back", sub.queue)  # fmt: skip
                self._suspend(sub, "cancelled by the broker")

    def resume(self, channel: BlockingChannel, sub: RabbitSubscription) -> bool:
        """Consume `sub`'s queue on `channel` if the queue is there (declaring it again first if this program
        declares it); otherwise keep the subscription suspended. False if the broker refused the consume for
        good (then the subscription has ended)."""
        problem = self._queue_problem(sub.queue)
        if problem is not None and self.transport.redeclare_queue(sub.queue):
            problem = self._queue_problem(sub.queue)
        if problem is not None:
            self._suspend(sub, problem)
            return True
        try:
            sub.start_consuming(channel)
        except pe.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:  # e.g. 403 ACCESS_REFUSED: retrying cannot help
                raise
            self._suspend(sub, f"{exc.reply_code} {exc.reply_text}")
            raise
        if self._suspended.pop(sub, None) is not None:
            log.warning("consuming %s again", sub.queue)
        return True

    def retry_due(self, channel: BlockingChannel | None) -> None:
        """Try the suspended subscriptions whose time has come (called by the I/O loop)."""
        now = time.monotonic()
        for sub, (_, next_try, _) in list(self._suspended.items()):
            if sub.cancelled:
                self._suspended.pop(sub, None)
            elif channel is not None and now >= next_try:
                self.resume(channel, sub)

    def _suspend(self, sub: RabbitSubscription, reason: str) -> None:
        now = time.monotonic()
        entry = self._suspended.setdefault(sub, [now, 0.0, now])
        entry[1] = now + RETRY_SECONDS
        if now - entry[2] >= COMPLAIN_SECONDS:
            entry[2] = now
            log.error("still cannot consume %s after %.0f s: %s; retrying every %.0f s",
                      sub.queue, now - entry[0], reason, RETRY_SECONDS)  # fmt: skip

    def _queue_problem(self, queue: str) -> str | None:
        """None if `queue` can be consumed now, else the broker's reason (asked on a throwaway channel)."""
        conn = self.transport.pika_connection
        if conn is None:
            return "not connected"
        channel = conn.channel()
        try:
            channel.queue_declare(queue, passive=True)
            return None
        except pe.ChannelClosedByBroker as exc:
            return f"{exc.reply_code} {exc.reply_text}"
        finally:
            if channel.is_open:
                channel.close()
