"""The transport interface. `rabbitmq.py` (pika) and `memory.py` (in-process) implement it.

Semantics every implementation keeps (checked by tests/transport/test_contract.py):
- `publish` returns only once the broker has taken responsibility for the message (publisher confirm);
  an unroutable message (no queue bound) raises PublishFailed (mandatory publishing). With
  `confirm=False` it does neither: the message is delivered all the same, an unroutable one is dropped.
- A subscription calls its handler on its own thread, one delivery at a time, so long work in a handler
  never stops the connection from servicing heartbeats.
- The handler settles each delivery with `ack()` once its work is safely done, `reject(reason)` to move
  it to the dead-letter queue with the reason in the `x-fl-reject-reason` header, or `release()` to give it
  back to its queue to be delivered again. A delivery that is never settled before its consumer or
  connection goes away is redelivered with `redelivered=True`.
- Settling is idempotent, and a delivery from a connection that has since been replaced is never settled
  on the new connection (its tag would be meaningless there).
- Every published message carries the publisher's login as `user_id`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fl_broker.transport.chunking import Body
from fl_broker.transport.spool import SpoolOptions
from fl_broker.wire.names import DEFAULT_QUEUE_TYPE, Topology

log = logging.getLogger(__name__)

MiB = 1024 * 1024


@dataclass(frozen=True)
class TransportOptions:
    """Tunables shared by both transports."""

    # Bodies above this travel as ordered chunks. 4 MiB: a receiver holds about one chunk's frames beside the
    # body it reassembles (a 10M-float worker peaked at 96 MiB with 8 MiB chunks, 92 with 4; 10M x 8 rounds
    # took as long either way, measured).
    chunk_size: int = 4 * MiB
    max_body_size: int = 1024 * MiB  # larger bodies are refused on publish and on receive
    max_partial_streams: int = 64  # chunked bodies being reassembled at once per subscription
    max_streams_per_sender: int = 4  # of those, how many one sender (login + client name) may hold
    stream_timeout: float = 300.0  # a partial chunk stream with no new chunk for this long is dead-lettered
    prefetch: int = 0  # 0: derived from max_body_size / chunk_size so a whole chunked body fits
    heartbeat: int = 30  # seconds
    publish_timeout: float = 60.0  # how long a publish may wait for a lost connection to come back
    connect_attempts: int = 0  # 0: retry forever (long-running programs); >0: give up after that many
    backoff_initial: float = 0.5
    backoff_max: float = 15.0
    # Who publishes, besides the login (AMQP app_id): tells apart participants that share one login, so
    # that per-sender bounds on receivers do not lump them together. None: the login.
    client_name: str | None = None
    # The operator loaded the topology (provisioned, least-privilege logins): declare() does nothing.
    predeclared: bool = False
    # x-queue-type of every durable queue declared (names.QUEUE_TYPE_CHOICES): quorum for a cluster's
    # replication; auto: quorum when the broker URLs name several nodes, else classic, and a queue that
    # exists keeps its type (logged with the way to migrate) instead of failing the declare.
    queue_type: str = DEFAULT_QUEUE_TYPE

    def effective_prefetch(self) -> int:
        """Prefetch large enough that the chunks of the biggest allowed body can all be unacked at once."""
        if self.prefetch:
            return self.prefetch
        return max(16, -(-self.max_body_size // self.chunk_size) + 4)


@dataclass
class Delivery:
    """One received message. Call exactly one of `ack()`, `reject(reason)` or `release()` when done with it."""

    body: bytes | bytearray | memoryview  # a memoryview for a spooled body (a private map of its file)
    exchange: str
    routing_key: str
    content_type: str | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    user_id: str | None = None
    timestamp: int | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    redelivered: bool = False
    # Set by the transport that made this delivery: called once with ("ack", None), ("reject", reason) or
    # ("release", None).
    settler: Callable[[str, str | None], None] | None = field(default=None, repr=False)
    _settled: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def ack(self) -> None:
        """The work this message asked for is done; the broker may forget it."""
        self._finish("ack", None)

    def reject(self, reason: str) -> None:
        """Move this message to the dead-letter queue, with `reason` in its headers."""
        self._finish("reject", reason)

    def release(self) -> None:
        """Give this message back to its queue, to be delivered again (marked redelivered), e.g. because its
        work could not be completed now; holding it unsettled instead would keep it from everyone."""
        self._finish("release", None)

    @property
    def settled(self) -> bool:
        """Whether ack() or reject() was already called."""
        return self._settled

    def withdraw(self) -> bool:
        """Mark this delivery settled without settling it (its transport gives it back to the broker
        itself); False if ack() or reject() got there first."""
        return self._claim()[0]

    def _claim(self) -> tuple[bool, Callable[[str, str | None], None] | None]:
        with self._lock:
            if self._settled:
                return False, None
            # The settler usually refers back to this delivery: dropping it breaks that cycle, so a settled
            # delivery and its body (a model-sized buffer or file map) are freed as soon as the last user lets
            # go, not whenever the cyclic garbage collector next runs.
            settler, self.settler = self.settler, None
            self._settled = True
            return True, settler

    def _finish(self, action: str, reason: str | None) -> None:
        claimed, settler = self._claim()
        if claimed and settler is not None:
            settler(action, reason)


Handler = Callable[[Delivery], None]


class Subscription(ABC):
    """A running consumer; `cancel()` stops it (unsettled deliveries are redelivered)."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop consuming. Waits for the handler to return if it is running."""


class Transport(ABC):
    """A connection to the federation's broker, as one participant (one login)."""

    user: str
    options: TransportOptions

    @abstractmethod
    def declare(self, topology: Topology) -> None:
        """Declare exchanges, queues and bindings. Idempotent; redone after every reconnect."""

    @abstractmethod
    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: Body,
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        headers: dict[str, Any] | None = None,
        expiration: float | None = None,
        persistent: bool = True,
        confirm: bool = True,
    ) -> None:
        """Publish and wait for the broker's confirm. `body` may be `Pieces` (buffers in order, sent without
        being joined: see `chunking.Pieces`). Raises PublishFailed, MessageTooLarge, ConnectionLost. With
        `expiration` (seconds), a message still unconsumed by then is dropped to the dead-letter exchange
        instead of being delivered (AMQP per-message TTL). `persistent=False` is for a message its sender can
        make again: the broker keeps it in memory only (no disk write), so a broker restart loses it, and
        whoever relies on it must notice that from `interruptions` and have it sent again.

        `confirm=False` (for messages nothing depends on, or that their sender makes again): returns once the
        message is handed to the connection, without waiting for the broker; one the broker cannot route is
        dropped silently, and one in flight when the connection drops is lost. A body above the chunk size is
        published with confirms all the same."""

    @abstractmethod
    def consume(self, queue: str, handler: Handler, *, spool: SpoolOptions | None = None) -> Subscription:
        """Start delivering messages of `queue` to `handler` on a dedicated thread. With `spool`, chunks of
        large bodies are written to that directory and acked as they arrive (see fl_broker.transport.spool)
        instead of being held unacked until the body is settled; a transport that never chunks ignores it."""

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Unconfirmed publishes made inside (on this thread) may be handed to the connection together, once
        the block ends, instead of one at a time (a transport without an I/O thread sends each at once).
        Their order is kept; a confirmed publish or any other call inside still goes out at once."""
        yield

    @property
    def interruptions(self) -> int:
        """How many times this transport's connection was lost or the broker cancelled one of its consumers
        (a restart, a lost node): non-persistent messages published before that may be gone from the broker."""
        return 0

    @property
    def failure(self) -> str | None:
        """Why this transport can no longer deliver (e.g. a consumer thread died), or None. Long-running
        programs check it and exit non-zero, so that their supervisor restarts them."""
        return None

    @abstractmethod
    def reply_queue(self) -> str:
        """Name of a private queue (exclusive to this transport) for replies to requests, bound to the
        fl.reply exchange under its own name (declared first unless predeclared). Consume it with `consume()`."""

    @abstractmethod
    def private_queue(self, bindings: tuple[tuple[str, str], ...]) -> str:
        """Name of a new queue exclusive to this transport, bound to each (exchange, routing key), e.g. to
        follow the fl.event stream. Removed when the transport closes."""

    @abstractmethod
    def hold_lock(self, name: str, on_lost: Callable[[str], None]) -> bool:
        """Try to take the lock `name`, an exclusive queue: the broker lets one connection at a time hold it
        and deletes it when that connection closes or is lost (at once for a process that dies, after the
        heartbeat timeout for one that hangs). True if this transport holds it now, False if another does.

        A held lock is taken again after every reconnect, before any consumer resumes or operation runs.
        If another connection took it meanwhile, the transport stops for good (`failure` says why, every
        call raises LockLost) and calls `on_lost(reason)` on its own thread: whoever held the lock has been
        replaced and must not act as if it still held it (fencing)."""

    @abstractmethod
    def consumer_count(self, queue: str) -> int:
        """How many consumers `queue` has right now, 0 if it does not exist (a passive declare: it creates
        nothing and disturbs no subscription). TransportError if the broker refuses to tell this login."""

    def begin_close(self) -> None:
        """The program is stopping (its own steps first, then `close`): from now on a broker that does not
        answer is given up on within a second or two instead of the heartbeat's timeout, so that what the
        program still asks of it (cancels, a last publish, the close) ends promptly. `close` implies it.
        Nothing to do for a transport without a broker."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Stop every subscription and close the connection. Unsettled deliveries are redelivered."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
