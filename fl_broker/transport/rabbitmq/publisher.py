"""Publishing for the RabbitMQ transport, on a confirm-mode channel of its own: a publish the broker refuses
(403, 404, 406) closes only this channel, so deliveries held on the consuming channel (a task in training)
are never redelivered because of it. Dead-letter copies go out here too."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingChannel

from fl_broker.errors import PublishFailed
from fl_broker.transport import chunking
from fl_broker.transport.rabbitmq import amqp
from fl_broker.wire import names

if TYPE_CHECKING:
    from fl_broker.transport.rabbitmq.connection import RabbitMQTransport

log = logging.getLogger(__name__)


class Publisher:
    """The publishing channel of one transport; used on its I/O thread only."""

    def __init__(self, transport: RabbitMQTransport) -> None:
        self.transport = transport
        self._channel: BlockingChannel | None = None

    def reset(self) -> None:
        """The connection is gone or replaced: open a new channel on the next publish."""
        self._channel = None

    def send(
        self,
        exchange: str,
        key: str,
        body: chunking.Body,
        props: pika.BasicProperties,
    ) -> None:
        """Publish on the I/O thread (on the publishing channel): one message, or ordered chunks, each
        confirmed. A refusal by the broker is raised as PublishFailed and costs only the publishing channel."""
        pub = self._open()
        try:
            # pika only takes `bytes` bodies, so views, bytearrays and pieces are copied (one chunk at a time).
            if len(body) <= self.transport.options.chunk_size:
                pub.basic_publish(exchange, key, chunking.whole(body), props, mandatory=True)
                return
            base_headers = dict(props.headers or {})
            for chunk_headers, data in chunking.iter_chunks(body, self.transport.options.chunk_size):
                chunk_props = amqp.copy_props(props, headers={**base_headers, **chunk_headers})
                pub.basic_publish(exchange, key, chunking.whole(data), chunk_props, mandatory=True)
                del data  # this chunk's copy goes before the next one is made
        except (pe.ChannelClosedByBroker, pe.ChannelWrongStateError) as exc:
            self._channel = None
            if isinstance(exc, pe.ChannelClosedByBroker):
                raise amqp.translate_channel_error(exc, PublishFailed) from exc
            raise PublishFailed(f"publishing channel closed: {exc!r}") from exc
        except pe.NackError:
            # A quorum queue nacks while it has no reachable leader (its node lost or cut off). Seen on a
            # cluster: a channel that got such a nack kept getting them after a new leader was elected, while
            # a new channel's publishes went through; so the next publish starts on a new channel.
            self._discard()
            raise

    def _discard(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and channel.is_open:
            try:
                channel.close()
            except Exception as exc:  # closing is best effort: the channel is dropped either way
                log.debug("error while closing the publishing channel: %r", exc)

    def _open(self) -> BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            conn = self.transport.pika_connection
            assert conn is not None
            self._channel = conn.channel()
            self._channel.confirm_delivery()
        return self._channel

    def dead_letter(
        self,
        ch: BlockingChannel,
        queue: str,
        items: list[tuple[int | None, pika.BasicProperties, bytes | bytearray | memoryview]],
        reason: str,
    ) -> None:
        """Copy each (tag or None, properties, body) to fl.dlx with the reason, then ack the originals.

        If the copy cannot be published (no dead-letter queue bound, or this login may not write to fl.dlx),
        the original is nacked without requeue: the broker moves it to the queue's own dead-letter exchange
        (without our reason header, which is logged here). Never requeued, so a refusal cannot loop."""
        for tag, props, body in items:
            copy = amqp.copy_props(
                props, headers=self._dead_letter_headers(props, queue, reason), user_id=self.transport.user
            )
            try:
                self.send(names.DEAD_LETTER_EXCHANGE, queue, body, copy)
            except (pe.UnroutableError, PublishFailed) as exc:
                log.error(
                    "cannot dead-letter a message from %s (%s); the broker's dead-lettering takes it; reason: %s",
                    queue,
                    amqp.translate(exc),
                    reason,
                )
                if tag is not None:
                    ch.basic_nack(tag, requeue=False)
                continue
            if tag is not None:
                ch.basic_ack(tag)

    def _dead_letter_headers(self, props: pika.BasicProperties, queue: str, reason: str) -> dict[str, Any]:
        # Chunk headers of a malformed stream are kept under another name, so that a consumer of the
        # dead-letter queue does not try (and fail) to reassemble them again.
        headers = {
            (f"x-fl-original-{k[5:]}" if k in chunking.CHUNK_HEADERS else k): v
            for k, v in (props.headers or {}).items()
        }
        headers[names.REJECT_REASON_HEADER] = reason
        headers[names.REJECT_QUEUE_HEADER] = queue
        if props.user_id and props.user_id != self.transport.user:
            headers["x-fl-original-user"] = props.user_id
        return headers
