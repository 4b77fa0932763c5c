"""A RabbitMQ consumer: pika delivers into an inbox on the I/O thread; a dispatch thread reassembles chunk
streams, calls the handler and routes settlements back to the I/O thread."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from fl_broker.errors import TransportError
from fl_broker.transport import chunking
from fl_broker.transport.base import Delivery, Handler, Subscription
from fl_broker.transport.rabbitmq import amqp

if TYPE_CHECKING:
    from fl_broker.transport.rabbitmq.connection import RabbitMQTransport

log = logging.getLogger(__name__)


@dataclass
class _Incoming:
    """A raw delivery as pika handed it to the I/O thread."""

    generation: int
    tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    properties: pika.BasicProperties
    body: bytes | memoryview | None

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.properties.headers or {})


class RabbitSubscription(Subscription):
    """A consumer: pika delivers into an inbox (I/O thread); a dispatch thread reassembles and handles."""

    def __init__(self, transport: RabbitMQTransport, queue: str, handler: Handler) -> None:
        self.transport = transport
        self.queue = queue
        self.handler = handler
        self.cancelled = False
        self._tag: tuple[int, str] | None = None  # (generation, consumer tag)
        self._inbox: SimpleQueue[_Incoming | None] = SimpleQueue()
        self._reassembler = chunking.Reassembler(transport.options.max_body_size, transport.options.max_partial_streams)
        self._held: dict[str, list[tuple[_Incoming, int]]] = {}  # stream id -> (chunk, its size)
        # Deliveries handed to the handler and not settled yet, in delivery order: cancel() requeues them.
        self._outstanding: dict[int, tuple[int, list[int], Delivery]] = {}
        self._outstanding_lock = threading.Lock()
        self._generation = -1
        self._thread = threading.Thread(target=self._dispatch_loop, name=f"fl-consume-{queue}", daemon=True)
        self._thread.start()

    def start_consuming(self, ch: BlockingChannel) -> None:
        """(I/O thread) Register the consumer on the current channel."""
        generation = self.transport.generation
        if self._tag is not None and self._tag[0] == generation:
            return  # already consuming on this channel (a retried op after a reconnect)
        ch.basic_qos(prefetch_count=min(self.transport.options.effective_prefetch(), amqp.MAX_PREFETCH))

        def on_message(_ch: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
            item = _Incoming(
                generation, method.delivery_tag, method.redelivered, method.exchange, method.routing_key, props, body
            )
            self._inbox.put(item)

        tag = ch.basic_consume(self.queue, on_message, auto_ack=False)
        self._tag = (generation, tag)

    def cancel(self) -> None:
        """Stop consuming; wait for a running handler; undelivered messages go back to the queue."""
        if self.cancelled:
            return
        self.cancelled = True
        if self.transport.connected:  # while disconnected there is no consumer to cancel
            try:
                self.transport.call(self._cancel_on, retry=False, what=f"cancel {self.queue!r}")
            except TransportError as exc:
                log.debug("cancel of %s: %s", self.queue, exc)
        self.stop_thread()
        self._requeue_outstanding()
        self.transport.forget(self)

    def _forget_older_than(self, generation: int) -> None:
        """Stop tracking deliveries of replaced channels: the broker has requeued them already."""
        with self._outstanding_lock:
            for key in [k for k, entry in self._outstanding.items() if entry[0] < generation]:
                del self._outstanding[key]

    def _requeue_outstanding(self) -> None:
        """Give back deliveries the handler kept without settling; settling them later is a no-op."""
        by_generation: dict[int, list[int]] = {}
        with self._outstanding_lock:
            for key, (generation, tags, delivery) in list(self._outstanding.items()):
                if not delivery.withdraw():
                    continue  # being settled right now by another thread: _settle() finishes it
                del self._outstanding[key]
                by_generation.setdefault(generation, []).extend(tags)
        for generation, tags in by_generation.items():
            self._settle_raw(generation, functools.partial(amqp.nack_all, tags=tags))

    def abandon(self) -> None:
        """(I/O thread) End a subscription the broker will not resume; never blocks."""
        self.cancelled = True
        self._inbox.put(None)

    def stop_thread(self) -> None:
        self.cancelled = True
        self._inbox.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _cancel_on(self, ch: BlockingChannel) -> None:
        if self._tag is not None and self._tag[0] == self.transport.generation:
            ch.basic_cancel(self._tag[1])  # pika nacks (requeues) what it buffered but did not dispatch

    # -- dispatch thread -------------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                break
            if item.generation != self._generation:  # new channel: partial streams are being redelivered
                self._generation = item.generation
                self._reassembler.clear()
                self._held.clear()
                self._forget_older_than(item.generation)
            if self.cancelled:
                self._requeue([item])
                continue
            delivery = (
                self._take_chunk(item) if chunking.is_chunk(item.properties.headers) else self._wrap([item], item.body)
            )
            if delivery is not None:
                self._handle(delivery)
        self._requeue([chunk for held in self._held.values() for chunk, _ in held])
        self._held.clear()

    def _take_chunk(self, item: _Incoming) -> Delivery | None:
        headers = item.headers
        assert item.body is not None
        if headers.get(chunking.INDEX_HEADER) == 0:
            self._drop_superseded(item)
        try:
            body = self._reassembler.add(headers, item.body)
        except chunking.ChunkError as exc:
            self._reject_stream(item, exc)
            return None
        stream_id = str(headers[chunking.STREAM_HEADER])
        size = len(item.body)
        item.body = None  # the bytes now live in the stream's buffer
        self._held.setdefault(stream_id, []).append((item, size))
        if body is None:
            return None
        return self._wrap([chunk for chunk, _ in self._held.pop(stream_id)], body)

    def _drop_superseded(self, item: _Incoming) -> None:
        """A publisher whose connection broke mid-stream sends the whole message again as a new stream with
        the same message id; the partial old stream would otherwise hold its chunks (and prefetch) forever."""
        message_id = item.properties.message_id
        for stream_id, held in list(self._held.items()):
            if message_id and held[0][0].properties.message_id == message_id:
                log.info("chunk stream %s of message %s superseded by a resend; dropping it", stream_id, message_id)
                del self._held[stream_id]
                self._reassembler.discard(stream_id)
                tags = [chunk.tag for chunk, _ in held]
                self._settle_raw(item.generation, functools.partial(amqp.ack_all, tags=tags))

    def _reject_stream(self, item: _Incoming, exc: chunking.ChunkError) -> None:
        """Dead-letter a malformed chunk and the held chunks of its stream; the handler never sees them."""
        log.warning("dead-lettering malformed chunk stream from %s: %s", self.queue, exc)
        held = self._held.pop(exc.stream or "", [])
        partial = exc.partial if exc.partial is not None else memoryview(b"")
        items: list[tuple[int, pika.BasicProperties, bytes | bytearray | memoryview]] = []
        offset = 0
        for chunk, size in held:
            items.append((chunk.tag, chunk.properties, partial[offset : offset + size]))
            offset += size
        items.append((item.tag, item.properties, item.body or b""))
        self._settle_raw(item.generation, lambda ch: self.transport.dead_letter(ch, self.queue, items, str(exc)))

    def _wrap(self, items: list[_Incoming], body: bytes | bytearray | memoryview | None) -> Delivery:
        first = items[0]
        props = first.properties
        headers = {k: v for k, v in first.headers.items() if k not in chunking.CHUNK_HEADERS}
        delivery = Delivery(
            body=body if isinstance(body, (bytes, bytearray)) else bytes(body or b""),
            exchange=first.exchange,
            routing_key=first.routing_key,
            content_type=props.content_type,
            message_id=props.message_id,
            correlation_id=props.correlation_id,
            reply_to=props.reply_to,
            user_id=props.user_id,
            timestamp=props.timestamp,
            headers=headers,
            redelivered=any(item.redelivered for item in items),
        )
        tags = [item.tag for item in items]
        delivery.settler = lambda action, reason: self._settle(first.generation, tags, delivery, action, reason)
        with self._outstanding_lock:
            self._outstanding[id(delivery)] = (first.generation, tags, delivery)
        return delivery

    def _settle(self, generation: int, tags: list[int], delivery: Delivery, action: str, reason: str | None) -> None:
        with self._outstanding_lock:
            if self._outstanding.pop(id(delivery), None) is None:
                return  # already requeued by cancel()
        if action == "ack":
            self._settle_raw(generation, functools.partial(amqp.ack_all, tags=tags))
            return
        props = pika.BasicProperties(
            content_type=delivery.content_type,
            delivery_mode=2,
            message_id=delivery.message_id,
            correlation_id=delivery.correlation_id,
            reply_to=delivery.reply_to,
            timestamp=delivery.timestamp,
            headers=dict(delivery.headers),
            user_id=delivery.user_id,
        )

        def reject(ch: BlockingChannel) -> None:
            # One copy of the whole body (chunked again if large), then ack every chunk of the original.
            self.transport.dead_letter(ch, self.queue, [(tags[-1], props, delivery.body)], reason or "rejected")
            for tag in tags[:-1]:
                ch.basic_ack(tag)

        self._settle_raw(generation, reject)

    def _settle_raw(self, generation: int, fn: Callable[[BlockingChannel], Any]) -> None:
        """Run a settle operation, unless the channel its tags belong to is gone (then it is a no-op)."""

        def guarded(ch: BlockingChannel) -> None:
            if generation != self.transport.generation:
                log.debug("not settling a delivery from an old channel; the broker redelivers it")
                return
            fn(ch)

        try:
            self.transport.call(guarded, retry=False, what="settle")
        except TransportError as exc:
            log.warning("could not settle a delivery from %s: %s (it will be redelivered)", self.queue, exc)

    def _requeue(self, items: list[_Incoming]) -> None:
        by_generation: dict[int, list[int]] = {}
        for item in items:
            by_generation.setdefault(item.generation, []).append(item.tag)
        for generation, tags in by_generation.items():
            self._settle_raw(generation, functools.partial(amqp.nack_all, tags=tags))

    def _handle(self, delivery: Delivery) -> None:
        try:
            self.handler(delivery)
        except Exception as exc:
            log.exception("handler for %s failed; rejecting the message", self.queue)
            delivery.reject(f"handler error: {exc!r}")
