"""What a RabbitMQ subscription does with the chunks of large bodies: two keepers with one interface.

`HeldStreams` (the default) keeps every chunk unacked until the whole body is handled, so a crash means
redelivery; it suits queues with one trusted sender at a time (a site's task queue). Its bounds keep a broken
or hostile stream from stalling the queue: a stream that can never fit the prefetch window is refused at
once, one sender may hold only a few partial streams, and a stream idle for too long is dead-lettered.

`SpooledStreams` writes each chunk to disk and acks it at once (see `fl_broker.transport.spool`), for queues
where many senders' streams interleave (the server's result queue): its prefetch window can never fill with
partial streams, and memory does not grow with the number of senders.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, Protocol

import pika

from fl_broker.transport import chunking
from fl_broker.transport.base import Delivery
from fl_broker.transport.rabbitmq.incoming import Incoming
from fl_broker.transport.spool import ChunkSpool, SpooledBody, SpoolOptions

if TYPE_CHECKING:
    from fl_broker.transport.rabbitmq.consumer import RabbitSubscription

log = logging.getLogger(__name__)

# Chunks buffered in pika for a spooled queue: each is on disk a moment later, so two keep the socket busy
# (one being written and acked while the next arrives). Each costs a chunk (4 MiB by default) of the server's memory.
SPOOL_PREFETCH = 2


class StreamKeeper(Protocol):
    """How a subscription keeps chunk streams until they are whole. `take` runs on the I/O thread as each
    chunk arrives, the rest on the dispatch thread, under the subscription's lock (never both at once)."""

    def prefetch(self) -> int:
        """The prefetch count the subscription's consumer should ask for."""

    def recover(self) -> list[Delivery]:
        """Whole bodies a previous consumer left unsettled, to handle before anything else."""

    def take(self, item: Incoming) -> Delivery | None:
        """Take one chunk; the whole body once its stream is complete."""

    def expire_idle(self) -> None:
        """Dead-letter partial streams that got no chunk for too long."""

    def reset(self) -> None:
        """The channel was replaced: unacked chunks are being redelivered."""

    def give_back(self) -> None:
        """The subscription ends: release what is held."""


class HeldStreams:
    """Chunks stay unacked in the prefetch window until the body they make up is settled. Each chunk is
    copied into its stream's buffer on the I/O thread as it arrives, so the frames it came in live no longer
    than that: a model-sized task costs its worker one copy of the model, not its frames as well."""

    def __init__(self, sub: RabbitSubscription) -> None:
        self.sub = sub
        options = sub.transport.options
        self._reassembler = chunking.Reassembler(
            options.max_body_size, options.max_partial_streams, options.max_streams_per_sender
        )
        self._held: dict[str, list[tuple[Incoming, int]]] = {}  # stream id -> (chunk, its size)

    def prefetch(self) -> int:
        return self.sub.transport.options.effective_prefetch()

    def recover(self) -> list[Delivery]:
        return []

    def take(self, item: Incoming) -> Delivery | None:
        headers = item.headers
        assert item.body is not None
        if headers.get(chunking.INDEX_HEADER) == 0:
            self._drop_superseded(item)
            count = headers.get(chunking.COUNT_HEADER)
            if isinstance(count, int) and count > self.prefetch():
                reason = f"a stream of {count} chunks can never fit this consumer's prefetch of {self.prefetch()}"
                self._reject(item, chunking.ChunkError(reason, str(headers.get(chunking.STREAM_HEADER))))
                return None
        try:
            body = self._reassembler.add(headers, item.body, item.sender)
        except chunking.ChunkError as exc:
            self._reject(item, exc)
            return None
        stream_id = str(headers[chunking.STREAM_HEADER])
        size = len(item.body)
        item.body = None  # the bytes now live in the stream's buffer (the socket reads they came in can go)
        self._held.setdefault(stream_id, []).append((item, size))
        if body is None:
            return None
        return self.sub.wrap([chunk for chunk, _ in self._held.pop(stream_id)], body)

    def expire_idle(self) -> None:
        timeout = self.sub.transport.options.stream_timeout
        # Only the oldest idle stream per sweep: the others may just be waiting for room in the prefetch
        # window that the oldest one fills, and get their chunks as soon as it is gone.
        for stream_id in self._reassembler.idle(timeout)[:1]:
            held = self._held.get(stream_id, [])
            reason = f"chunk stream {stream_id} incomplete: {len(held)} chunks and no chunk for {timeout:.0f} s"
            log.warning("dead-lettering an idle chunk stream from %s: %s", self.sub.queue, reason)
            self._dead_letter_held(stream_id, self._reassembler.partial(stream_id), [], reason)
            self._reassembler.discard(stream_id)

    def reset(self) -> None:
        self._reassembler.clear()
        self._held.clear()

    def give_back(self) -> None:
        self.sub.requeue([chunk for held in self._held.values() for chunk, _ in held])
        self.reset()

    def _drop_superseded(self, item: Incoming) -> None:
        """A publisher whose connection broke mid-stream sends the whole message again as a new stream with
        the same message id; the partial old stream would otherwise hold its chunks (and prefetch) forever."""
        message_id = item.properties.message_id
        for stream_id, held in list(self._held.items()):
            if message_id and held[0][0].properties.message_id == message_id:
                log.info("chunk stream %s of message %s superseded by a resend; dropping it", stream_id, message_id)
                del self._held[stream_id]
                self._reassembler.discard(stream_id)
                self.sub.ack([chunk for chunk, _ in held])

    def _reject(self, item: Incoming, exc: chunking.ChunkError) -> None:
        """Dead-letter a malformed chunk and the held chunks of its stream; the handler never sees them."""
        log.warning("dead-lettering malformed chunk stream from %s: %s", self.sub.queue, exc)
        partial = exc.partial if exc.partial is not None else memoryview(b"")
        extra: list[tuple[int | None, pika.BasicProperties, bytes | bytearray | memoryview]] = [
            (item.tag, item.properties, chunking.whole(item.body or b""))
        ]
        self._dead_letter_held(exc.stream or "", partial, extra, str(exc))

    def _dead_letter_held(
        self,
        stream_id: str,
        partial: memoryview,
        extra: list[tuple[int | None, pika.BasicProperties, bytes | bytearray | memoryview]],
        reason: str,
    ) -> None:
        held = self._held.pop(stream_id, [])
        items: list[tuple[int | None, pika.BasicProperties, bytes | bytearray | memoryview]] = []
        offset = 0
        for chunk, size in held:
            items.append((chunk.tag, chunk.properties, partial[offset : offset + size]))
            offset += size
        items.extend(extra)
        if items:
            generation = held[0][0].generation if held else self.sub.current_generation
            self.sub.dead_letter(generation, items, reason)


class SpooledStreams:
    """Chunks are written to disk and acked at once; whole bodies are handed over as memory maps. Each chunk
    is written on the I/O thread as it arrives (one `pwritev` of its frames, into the page cache), so its
    frames are freed before the next chunk is read rather than waiting in the inbox beside it."""

    def __init__(self, sub: RabbitSubscription, options: SpoolOptions, max_body_size: int) -> None:
        self.sub = sub
        self.spool = ChunkSpool(options, max_body_size)

    def prefetch(self) -> int:
        return SPOOL_PREFETCH

    def recover(self) -> list[Delivery]:
        return [self._wrap(body) for body in self.spool.recover()]

    def take(self, item: Incoming) -> Delivery | None:
        assert item.body is not None
        try:
            status, body = self.spool.add(item.headers, item.body, item.sender, functools.partial(_record, item))
        except chunking.ChunkError as exc:
            log.warning("dead-lettering a chunk refused by the spool of %s: %s", self.sub.queue, exc)
            raw = chunking.whole(item.body)
            self.sub.dead_letter(item.generation, [(item.tag, item.properties, raw)], str(exc))
            return None
        if status != ChunkSpool.WRITTEN:
            log.debug("dropping a %s chunk from %s", status, self.sub.queue)
        self.sub.ack([item])  # on disk now (or already): the broker may forget it
        return self._wrap(body) if body is not None else None

    def expire_idle(self) -> None:
        for expired in self.spool.expire():
            log.warning("dead-lettering an idle chunk stream from %s: %s", self.sub.queue, expired.reason)
            # Its chunks were acked when spooled: what goes to the dead letters is a notice, without the bytes.
            props = _properties(expired.properties)
            self.sub.dead_letter(self.sub.current_generation, [(None, props, b"")], expired.reason)

    def reset(self) -> None:
        """Spooled streams survive a new channel: their chunks are on disk and acked."""

    def give_back(self) -> None:
        self.spool.close()

    def _wrap(self, spooled: SpooledBody) -> Delivery:
        record = spooled.properties
        delivery = Delivery(
            body=spooled.body,
            exchange=record.get("exchange", ""),
            routing_key=record.get("routing_key", ""),
            content_type=record.get("content_type"),
            message_id=record.get("message_id"),
            correlation_id=record.get("correlation_id"),
            reply_to=record.get("reply_to"),
            user_id=record.get("user_id"),
            timestamp=record.get("timestamp"),
            headers=dict(record.get("headers") or {}),
            redelivered=spooled.recovered or bool(record.get("redelivered")),
        )
        delivery.settler = functools.partial(self._settle, spooled, delivery)
        return delivery

    def _settle(self, spooled: SpooledBody, delivery: Delivery, action: str, reason: str | None) -> None:
        if action == "reject":
            props = _properties(spooled.properties)
            self.sub.dead_letter(self.sub.current_generation, [(None, props, delivery.body)], reason or "rejected")
        self.spool.finish(spooled.stream_id)


def _record(item: Incoming) -> dict[str, Any]:
    """What the spool keeps of a stream's first chunk, to rebuild the delivery (after a restart too)."""
    props = item.properties
    return {
        "exchange": item.exchange,
        "routing_key": item.routing_key,
        "redelivered": item.redelivered,
        "content_type": props.content_type,
        "message_id": props.message_id,
        "correlation_id": props.correlation_id,
        "reply_to": props.reply_to,
        "user_id": props.user_id,
        "timestamp": props.timestamp,
        "headers": {k: v for k, v in item.headers.items() if k not in chunking.CHUNK_HEADERS},
    }


def _properties(record: dict[str, Any]) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type=record.get("content_type"),
        delivery_mode=2,
        message_id=record.get("message_id"),
        correlation_id=record.get("correlation_id"),
        reply_to=record.get("reply_to"),
        timestamp=record.get("timestamp"),
        headers=dict(record.get("headers") or {}),
        user_id=record.get("user_id"),
    )
