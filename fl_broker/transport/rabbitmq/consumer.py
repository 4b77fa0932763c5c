"""A RabbitMQ consumer: on the I/O thread pika's deliveries go into an inbox, and chunks into their stream's
keeper as they arrive; a dispatch thread calls the handler with whole bodies and routes settlements back to
the I/O thread."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from fl_broker.errors import TransportError
from fl_broker.transport import chunking
from fl_broker.transport.base import Delivery, Handler, Subscription
from fl_broker.transport.rabbitmq import amqp, frames
from fl_broker.transport.rabbitmq.incoming import Incoming
from fl_broker.transport.rabbitmq.streams import HeldStreams, SpooledStreams, StreamKeeper
from fl_broker.transport.spool import SpoolOptions

if TYPE_CHECKING:
    from fl_broker.transport.rabbitmq.connection import RabbitMQTransport

log = logging.getLogger(__name__)


_SWEEP_SECONDS = 1.0  # how often idle partial streams are looked for


class RabbitSubscription(Subscription):
    """A consumer: pika delivers into an inbox, chunks into their keeper (I/O thread); a dispatch thread handles."""

    def __init__(
        self, transport: RabbitMQTransport, queue: str, handler: Handler, spool: SpoolOptions | None = None
    ) -> None:
        self.transport = transport
        self.queue = queue
        self.handler = handler
        self.cancelled = False
        self._tag: tuple[int, str] | None = None  # (generation, consumer tag)
        self._inbox: SimpleQueue[Incoming | Ready | None] = SimpleQueue()
        self.failure: str | None = None
        self._next_sweep = 0.0
        self._streams: StreamKeeper = (
            SpooledStreams(self, spool, transport.options.max_body_size) if spool else HeldStreams(self)
        )
        # Deliveries handed to the handler and not settled yet, in delivery order: cancel() requeues them.
        self._outstanding: dict[int, tuple[int, list[int], Delivery]] = {}
        self._outstanding_lock = threading.Lock()
        self._generation = -1
        # The keeper takes chunks as they arrive, on the I/O thread, and shares its state with the dispatch
        # thread's recovery, sweeps and give-back: this lock is held around each of them.
        self._streams_lock = threading.Lock()
        self._arrival_generation = -1
        self._arriving = False  # (I/O thread) taking a chunk inside pika's poll: settle_raw must not run pika
        self._thread = threading.Thread(target=self._dispatch_loop, name=f"fl-consume-{queue}", daemon=True)
        self._thread.start()

    def start_consuming(self, ch: BlockingChannel) -> None:
        """(I/O thread) Register the consumer on the current channel."""
        generation = self.transport.generation
        if self._tag is not None and self._tag[0] == generation:
            return  # already consuming on this channel (a retried op after a reconnect)
        ch.basic_qos(prefetch_count=min(self._streams.prefetch(), amqp.MAX_PREFETCH))

        def on_message(_ch: Any, method: Any, props: pika.BasicProperties, body: bytes | chunking.Pieces) -> None:
            chunk = chunking.is_chunk(props.headers)
            if not chunk:
                body = frames.joined(body)  # a chunk stays the frames it came in: its keeper copies them once
            item = Incoming(
                generation, method.delivery_tag, method.redelivered, method.exchange, method.routing_key, props, body
            )
            if chunk:
                self._take_on_arrival(item)
            else:
                self._inbox.put(item)

        tag = amqp.consume_on_arrival(ch, self.queue, on_message)
        self._tag = (generation, tag)

    @property
    def consumer_tag(self) -> str | None:
        """The broker's tag of this consumer on the current channel, if it consumes there."""
        if self._tag is None or self._tag[0] != self.transport.generation:
            return None
        return self._tag[1]

    def consumer_tag_lost(self) -> None:
        """(I/O thread) The broker cancelled this consumer: start_consuming must register it again."""
        self._tag = None

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
            self.settle_raw(generation, functools.partial(amqp.nack_all, tags=tags))

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
        try:
            with self._streams_lock:  # the I/O thread may take chunks already
                recovered = self._streams.recover()
            for delivery in recovered:
                self._handle(delivery)
            self._serve()
            with self._streams_lock:
                self._streams.give_back()
        except BaseException as exc:  # a bug or MemoryError outside one message: say so, never go quiet
            self.failure = f"consumer of {self.queue} stopped: {exc!r}"
            log.critical("%s", self.failure, exc_info=True)
            self.transport.consumer_failed(self.failure)
            raise

    def _serve(self) -> None:
        self._next_sweep = time.monotonic() + _SWEEP_SECONDS
        while True:
            try:
                item = self._inbox.get(timeout=_SWEEP_SECONDS)
            except Empty:
                self._sweep_if_due()
                continue
            if item is None:
                return
            self._sweep_if_due()
            self._take_guarded(item)
            # Not kept until the next message arrives: a handled task's body would live on beside the next
            # task's, which is reassembled on the I/O thread before anything reaches this inbox.
            del item

    def _take_guarded(self, item: Incoming | Ready) -> None:
        try:
            self._take(item)
        except Exception as exc:  # e.g. MemoryError: this message is refused, the consumer goes on
            log.exception("could not process a message from %s; dead-lettering it", self.queue)
            if isinstance(item, Ready):
                item.delivery.reject(f"consumer error: {exc!r}")
                return
            items: list[tuple[int | None, pika.BasicProperties, bytes | bytearray | memoryview]] = [
                (item.tag, item.properties, chunking.whole(item.body or b""))
            ]
            self.dead_letter(item.generation, items, f"consumer error: {exc!r}")

    def _sweep_if_due(self) -> None:
        if time.monotonic() >= self._next_sweep:
            with self._streams_lock:
                self._streams.expire_idle()
            self._next_sweep = time.monotonic() + _SWEEP_SECONDS

    def _take(self, item: Incoming | Ready) -> None:
        if item.generation != self._generation:  # new channel: unacked deliveries are being redelivered
            self._generation = item.generation  # (the keeper was reset by the channel's first chunk)
            self._forget_older_than(item.generation)
        if isinstance(item, Ready):
            if not self.cancelled:  # else it stays outstanding, and cancel() requeues it
                self._handle(item.delivery)
            return
        if self.cancelled:
            self.requeue([item])
            return
        self._handle(self.wrap([item], chunking.whole(item.body or b"")))

    def _take_on_arrival(self, item: Incoming) -> None:
        """(I/O thread) Hand a chunk to its keeper as pika completes it: its bytes are copied into the stream's
        buffer (or the spool) and the frames they came in are freed before the next ones are read. Taken on
        the dispatch thread, a worker held a task's frames beside their reassembled copy whenever pika read
        ahead of it (measured: a 10M-float task's worker peaked at 3.1-3.5x the model, 2.6x after)."""
        with self._streams_lock:
            self._arriving = True  # called inside a poll of pika's: what the keeper settles waits for the loop
            try:
                delivery = self._take_arrived(item)
            finally:
                self._arriving = False
        if delivery is not None:
            self._inbox.put(Ready(item.generation, delivery))

    def _take_arrived(self, item: Incoming) -> Delivery | None:
        if self.cancelled:
            self.requeue([item])
            return None
        if item.generation != self._arrival_generation:  # a new channel: its chunks are redeliveries
            self._arrival_generation = item.generation
            self._streams.reset()
        try:
            return self._streams.take(item)
        except Exception as exc:  # e.g. MemoryError: this chunk is refused, the I/O thread goes on
            log.exception("could not take a chunk from %s; dead-lettering it", self.queue)
            body = chunking.whole(item.body or b"")
            self.dead_letter(item.generation, [(item.tag, item.properties, body)], f"consumer error: {exc!r}")
            return None

    # -- for the stream keepers (streams.py) -----------------------------------------------------------
    @property
    def current_generation(self) -> int:
        """The generation of the channel deliveries arrive on now."""
        return self.transport.generation

    def dead_letter(
        self,
        generation: int,
        items: list[tuple[int | None, pika.BasicProperties, bytes | bytearray | memoryview]],
        reason: str,
    ) -> None:
        """Copy `items` (tag or None, properties, body) to the dead-letter exchange with `reason`; ack the tags."""
        self.settle_raw(generation, lambda ch: self.transport.publisher.dead_letter(ch, self.queue, items, reason))

    def ack(self, items: list[Incoming]) -> None:
        """Ack raw deliveries now."""
        for generation, tags in _tags_by_generation(items).items():
            self.settle_raw(generation, functools.partial(amqp.ack_all, tags=tags))

    def wrap(self, items: list[Incoming], body: bytes | bytearray | memoryview | None) -> Delivery:
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
        if action in ("ack", "release"):
            settle = amqp.ack_all if action == "ack" else amqp.nack_all  # nack_all requeues, in order
            self.settle_raw(generation, functools.partial(settle, tags=tags))
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
            self.transport.publisher.dead_letter(
                ch, self.queue, [(tags[-1], props, delivery.body)], reason or "rejected"
            )
            for tag in tags[:-1]:
                ch.basic_ack(tag)

        self.settle_raw(generation, reject)

    def settle_raw(self, generation: int, fn: Callable[[BlockingChannel], Any]) -> None:
        """Run a settle operation, unless the channel its tags belong to is gone (then it is a no-op)."""

        def guarded(ch: BlockingChannel) -> None:
            if generation != self.transport.generation:
                log.debug("not settling a delivery from an old channel; the broker redelivers it")
                return
            fn(ch)

        # Not waited for (see RabbitMQTransport.post): it runs on the I/O thread before anything asked of the
        # transport after it, e.g. a worker's ack before its next result's publish.
        self.transport.post(guarded, what=f"settle a delivery from {self.queue}", later=self._arriving)

    def requeue(self, items: list[Incoming]) -> None:
        """Give raw deliveries back to the queue."""
        for generation, tags in _tags_by_generation(items).items():
            self.settle_raw(generation, functools.partial(amqp.nack_all, tags=tags))

    def _handle(self, delivery: Delivery) -> None:
        try:
            self.handler(delivery)
        except Exception as exc:
            log.exception("handler for %s failed; rejecting the message", self.queue)
            delivery.reject(f"handler error: {exc!r}")


@dataclass
class Ready:
    """A whole body its keeper completed on the I/O thread, for the dispatch thread to handle."""

    generation: int
    delivery: Delivery


def _tags_by_generation(items: list[Incoming]) -> dict[int, list[int]]:
    by_generation: dict[int, list[int]] = {}
    for item in items:
        by_generation.setdefault(item.generation, []).append(item.tag)
    return by_generation
