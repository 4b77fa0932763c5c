"""The exclusive queues a RabbitMQ transport owns, kept across reconnects (all on the transport's I/O thread).

Two kinds: *private* queues (replies, a run's events), bound as asked and declared again under the same
name on each new connection; and *locks* (the standby server's `fl.server.lock`): an exclusive queue that
at most one connection holds, which decides which server is active. A held lock is taken again on each new
connection before anything else uses it; one that another connection took meanwhile ends the transport
(fencing), since two active servers would each move the run on."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

import pika
import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingChannel

from fl_broker.errors import ConnectionLost, TransportError
from fl_broker.transport.rabbitmq import amqp

log = logging.getLogger(__name__)

RESOURCE_LOCKED = 405  # an exclusive queue that another connection holds

# After a reconnect, how long a held lock is tried again while the broker may still hold the previous
# connection (it reaps it at once when it sees the socket close; a refusal past this means another holder).
LOCK_PATIENCE = 3.0

Bindings = tuple[tuple[str, str], ...]


def declare_private_queue(ch: BlockingChannel, name: str, bindings: Bindings) -> None:
    """Declare the exclusive, auto-deleted queue `name` and bind it as given."""
    ch.queue_declare(name, durable=False, exclusive=True, auto_delete=True)
    for exchange_name, key in bindings:
        ch.queue_bind(name, exchange_name, routing_key=key)


def take_lock(conn: pika.BlockingConnection | None, name: str, patience: float = 0.0) -> bool:
    """Declare the exclusive queue `name` on a throwaway channel (the refusal closes the channel it was asked
    on): True if this connection holds it (now, or already), False if another connection does. With
    `patience`, a refusal is tried again for that many seconds, servicing the connection meanwhile: after a
    reconnect, the broker may not have reaped this program's previous connection (and its queue) yet."""
    if conn is None:
        raise ConnectionLost("not connected")
    deadline = time.monotonic() + patience
    while True:
        channel = conn.channel()
        try:
            channel.queue_declare(name, durable=False, exclusive=True, auto_delete=False)
            return True
        except pe.ChannelClosedByBroker as exc:
            if exc.reply_code != RESOURCE_LOCKED:
                raise amqp.translate_channel_error(exc, TransportError) from exc
            if time.monotonic() >= deadline:
                return False
        finally:
            if channel.is_open:
                channel.close()
        conn.sleep(0.2)


class ExclusiveQueues:
    """One transport's private queues (name -> bindings) and held locks (name -> what to call if lost)."""

    def __init__(self, user: str) -> None:
        self._user = user
        self._private: dict[str, Bindings] = {}
        self._locks: dict[str, Callable[[str], None]] = {}

    def private_name(self) -> str:
        """A new private queue's name: the login in it tells operators whose queue it is."""
        return f"fl.private.{self._user}.{uuid.uuid4().hex[:12]}"

    def declare_private(self, ch: BlockingChannel, name: str, bindings: Bindings) -> None:
        """Declare a private queue now and remember it, to declare it again after a reconnect."""
        declare_private_queue(ch, name, bindings)
        self._private[name] = bindings

    def hold_lock(self, conn: pika.BlockingConnection | None, name: str, on_lost: Callable[[str], None]) -> bool:
        """Take the lock `name` on `conn`; a lock got is remembered, so a reconnect right after takes it again."""
        held = take_lock(conn, name)
        if held:
            self._locks[name] = on_lost
        return held

    def take_locks_again(self, conn: pika.BlockingConnection) -> tuple[str, Callable[[str], None]] | None:
        """Take each held lock again on a new connection: None if all were, else why not and the lost lock's
        `on_lost`, for the transport to call once it has stopped itself for good."""
        for name, on_lost in list(self._locks.items()):
            if take_lock(conn, name, patience=LOCK_PATIENCE):
                continue
            reason = f"another connection took the lock {name!r} while this one was down"
            log.critical("%s: stopping this transport for good", reason)
            return reason, on_lost
        return None

    def declare_private_again(self, ch: BlockingChannel) -> None:
        """Declare every private queue again on a new channel (after the topologies they bind to)."""
        for name, bindings in list(self._private.items()):
            declare_private_queue(ch, name, bindings)
