"""Publishing for the RabbitMQ transport, on a confirm-mode channel of its own: a publish the broker refuses
(403, 404, 406) closes only this channel, so deliveries held on the consuming channel (a task in training)
are never redelivered because of it. Dead-letter copies go out here too."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions as pe
from pika import spec
from pika.adapters.blocking_connection import BlockingChannel

from fl_broker.errors import PublishFailed
from fl_broker.transport import chunking
from fl_broker.transport.rabbitmq import amqp, frames
from fl_broker.wire import names

if TYPE_CHECKING:
    from fl_broker.transport.rabbitmq.connection import RabbitMQTransport

log = logging.getLogger(__name__)

# Chunks of one body published before waiting for the broker's confirms (each chunk of 8 MiB is marshalled
# into pika's output buffer until the socket takes it, so this bounds a send's extra memory too).
CONFIRM_WINDOW = 4


class Confirms:
    """The publisher confirms of one channel by delivery tag, so that several messages can be in flight.

    A send waits for all of its messages before it returns, so a return or nack seen during a send is one of
    that send's messages (the whole body is then refused, as a chunk stream is one message)."""

    def __init__(self) -> None:
        self.next_tag = 1
        self.outstanding: set[int] = set()
        self.returned = False
        self.nacked = False

    def sent(self) -> None:
        """A message was published: its delivery tag is the next one."""
        self.outstanding.add(self.next_tag)
        self.next_tag += 1

    def on_confirm(self, confirm: Any) -> None:
        """pika's callback for Basic.Ack / Basic.Nack (one tag, or every tag up to it with `multiple`)."""
        method = confirm.method
        if method.multiple:
            self.outstanding = {tag for tag in self.outstanding if tag > method.delivery_tag}
        else:
            self.outstanding.discard(method.delivery_tag)
        if isinstance(method, spec.Basic.Nack):
            self.nacked = True

    def on_return(self, *_returned: Any) -> None:
        """pika's callback for Basic.Return: a mandatory message no queue took."""
        self.returned = True

    def failure(self) -> pe.AMQPError | None:
        """What the broker said no to since the send began, as pika's blocking channel would raise it."""
        if self.returned:
            return pe.UnroutableError([])
        if self.nacked:
            return pe.NackError([])
        return None


def _sendable(body: chunking.Body) -> bytes | memoryview | chunking.Pieces:
    """`body` as frames.publish takes it (a bytearray is sent through a view of it)."""
    return memoryview(body) if isinstance(body, bytearray) else body


class Publisher:
    """The publishing channel of one transport; used on its I/O thread only."""

    def __init__(self, transport: RabbitMQTransport) -> None:
        self.transport = transport
        self._channel: BlockingChannel | None = None
        self._confirms = Confirms()
        self._unconfirmed: BlockingChannel | None = None  # see send_unconfirmed

    def reset(self) -> None:
        """The connection is gone or replaced: open new channels on the next publish."""
        self._channel = self._unconfirmed = None

    def send_unconfirmed(self, exchange: str, key: str, data: bytes, props: pika.BasicProperties) -> None:
        """Publish one message on a channel of its own that is not in confirm mode, without waiting for the
        broker. Lifecycle events go out so: each confirm awaited here held this I/O thread for ~0.5-1 ms,
        during which no task went out and no result was taken in; with 8 sites, 24 events a round kept the
        server's I/O thread waiting for 41 ms of a 71 ms round (measured). Not mandatory: a message the
        broker cannot route is dropped, and a return would only be noise here. A channel the broker closed
        (e.g. a login that may not write to the exchange) is opened again on the next publish. The frames wait
        in pika's output buffer for the I/O thread's next pass (one socket write for a round's events)."""
        channel = self._unconfirmed
        if channel is None or not channel.is_open:
            conn = self.transport.pika_connection
            assert conn is not None
            channel = self._unconfirmed = conn.channel()
        try:
            channel._impl.basic_publish(exchange, key, data, props, mandatory=False)
        except (pe.ChannelClosedByBroker, pe.ChannelWrongStateError) as exc:
            self._unconfirmed = None
            raise PublishFailed(f"publishing channel closed: {exc!r}") from exc

    def send(
        self,
        exchange: str,
        key: str,
        body: chunking.Body,
        props: pika.BasicProperties,
    ) -> None:
        """Publish on the I/O thread (on the publishing channel): one message, or ordered chunks with up to
        CONFIRM_WINDOW of them awaiting the broker's confirm; returns once every one is confirmed. A refusal by
        the broker is raised as PublishFailed and costs only the publishing channel."""
        pub = self._open()
        confirms = self._confirms
        confirms.returned = confirms.nacked = False
        try:
            # Views and pieces go to pika as they are (frames.publish): each frame is copied once, when marshalled.
            if len(body) <= self.transport.options.chunk_size:
                self._publish(pub, exchange, key, _sendable(body), props)
            else:
                base_headers = dict(props.headers or {})
                chunk_size = self.transport.options.chunk_size
                for chunk_headers, data in chunking.iter_chunks(body, chunk_size):
                    chunk_props = amqp.copy_props(props, headers={**base_headers, **chunk_headers})
                    self._publish(pub, exchange, key, data, chunk_props)
                    pub._flush_output(lambda: self._room_for_a_chunk(pub, chunk_size))
                    if confirms.failure() is not None:
                        break  # refused: the rest of the stream would be too
            pub._flush_output(lambda: not confirms.outstanding)
            failure = confirms.failure()
            if failure is not None:
                raise failure
        except (pe.ChannelClosedByBroker, pe.ChannelWrongStateError) as exc:
            self._channel = None
            if isinstance(exc, pe.ChannelClosedByBroker):
                raise amqp.translate_channel_error(exc, PublishFailed) from exc
            raise PublishFailed(f"publishing channel closed: {exc!r}") from exc
        except pe.NackError:
            # A quorum queue nacks publishes while its leader's node is just lost (RabbitMQ 3.10). A channel
            # that got such nacks goes on getting them, for every publish, long after the queue has a new
            # leader (measured on a 3-node cluster: every publish for 60 s after a kill -9, pika's own
            # confirm_delivery alike), while a new channel's publishes go through within a second. So the
            # next publish starts on a new channel (tests/cluster/test_publish_after_leader_loss_rabbitmq.py).
            self._discard()
            raise

    def _room_for_a_chunk(self, pub: BlockingChannel, chunk_size: int) -> bool:
        """Whether the next chunk may be marshalled: fewer than CONFIRM_WINDOW chunks await their confirm, and
        pika holds at most a quarter chunk of the last one unwritten. A model-sized body used to be marshalled
        up to CONFIRM_WINDOW chunks ahead of a slow socket: 32 MiB of frames, whose heap pages stayed resident
        after they were sent (a 10M-float server's task took it from 40 to 78 MiB, measured)."""
        return len(self._confirms.outstanding) < CONFIRM_WINDOW and frames.unsent_bytes(pub._impl) <= chunk_size // 4

    def _discard(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and channel.is_open:
            try:
                channel.close()
            except Exception as exc:  # closing is best effort: the channel is dropped either way
                log.debug("error while closing the publishing channel: %r", exc)

    def _publish(
        self, pub: BlockingChannel, exchange: str, key: str, data: bytes | memoryview | chunking.Pieces, props: Any
    ) -> None:
        """Hand one message to pika without waiting for its confirm (send() waits)."""
        frames.publish(pub._impl, exchange, key, data, props)
        self._confirms.sent()

    def _open(self) -> BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            conn = self.transport.pika_connection
            assert conn is not None
            channel = conn.channel()
            # Confirms tracked here rather than by BlockingChannel.confirm_delivery(), whose basic_publish
            # waits for each message's confirm before the next one can go out.
            confirms, selected = Confirms(), list[Any]()
            channel._impl.confirm_delivery(confirms.on_confirm, callback=selected.append)
            channel._impl.add_on_return_callback(confirms.on_return)
            channel._flush_output(lambda: bool(selected))
            self._channel, self._confirms = channel, confirms
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
            copy = amqp.copy_props(  # persistent, even of a non-persistent original: nobody can make it again
                props,
                headers=self._dead_letter_headers(props, queue, reason),
                user_id=self.transport.user,
                delivery_mode=2,
            )
            try:
                self._send_dead_letter(queue, body, copy)
            except (pe.UnroutableError, pe.NackError, PublishFailed) as exc:
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

    def _send_dead_letter(self, queue: str, body: chunking.Body, props: pika.BasicProperties) -> None:
        # A nack gets one more try: send() has moved to a new channel, and a quorum queue that just lost its
        # leader confirms a new channel's publishes within a second (see send). A nack that escaped here
        # used to leave the original unacked for as long as the consumer's channel lived.
        try:
            self.send(names.DEAD_LETTER_EXCHANGE, queue, body, props)
        except pe.NackError:
            self.send(names.DEAD_LETTER_EXCHANGE, queue, body, props)

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
