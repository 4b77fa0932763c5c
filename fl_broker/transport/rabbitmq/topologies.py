"""The topologies a RabbitMQ transport declared, declared again on each new channel (on its I/O thread).

A program declares what it uses once; after a reconnect (perhaps to another node of a cluster) the same
exchanges, queues and bindings are declared again before any subscription resumes, so a node that lost them
gets them back. New queues take the transport's queue type (`--queue-type`; `auto` means quorum when the URLs
name a cluster's nodes), and with `auto` a queue that exists as another type keeps it."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pika
import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingChannel

from fl_broker.errors import QueueTypeMismatch
from fl_broker.transport.base import TransportOptions
from fl_broker.transport.rabbitmq import amqp
from fl_broker.wire import names
from fl_broker.wire.names import Topology

log = logging.getLogger(__name__)


class Topologies:
    """What one transport declared, and the queue type it declares new queues with."""

    def __init__(self, options: TransportOptions, node_count: int) -> None:
        self.queue_type = names.resolve_queue_type(options.queue_type, node_count)
        self.adopt = options.queue_type == names.AUTO  # queues that exist keep their type
        self._declared: list[Topology] = []

    def declaring(self, topology: Topology) -> Callable[[BlockingChannel], None]:
        """An operation for the I/O thread that declares `topology`."""
        return lambda ch: amqp.declare(ch, topology, self.queue_type, adopt=self.adopt)

    def remember(self, topology: Topology) -> None:
        """`topology` was declared: declare it again on each new channel."""
        if topology not in self._declared:
            self._declared.append(topology)

    def declare_again(self, channel: BlockingChannel, on_mismatch: Callable[[str], None]) -> bool:
        """Declare each remembered topology on a new channel. False if the broker refused one: it is no longer
        declared again, the refusal closed `channel`, and the caller opens a new one and calls this again."""
        for topology in list(self._declared):
            try:
                self.declaring(topology)(channel)
            except QueueTypeMismatch as exc:  # e.g. failed over to a node where it was declared otherwise
                log.critical("%s", exc)
                on_mismatch(str(exc))
                self._declared.remove(topology)
                return False
            except pe.ChannelClosedByBroker as exc:  # e.g. someone redeclared a queue differently
                log.error("cannot declare %s again (%s); no longer redeclaring it", topology, exc)
                self._declared.remove(topology)
                return False
        return True

    def redeclare_queue(self, conn: pika.BlockingConnection, queue: str) -> bool:
        """Declare again, each on a throwaway channel, the remembered topologies that hold `queue`; whether one
        was declared."""
        done = False
        for topology in [t for t in self._declared if any(q.name == queue for q in t.queues)]:
            done = self._redeclare(conn.channel(), topology) or done
        return done

    def _redeclare(self, channel: BlockingChannel, topology: Topology) -> bool:
        """Declare `topology` again on a throwaway channel; False (logged) if the broker refused."""
        try:
            self.declaring(topology)(channel)
            return True
        except (pe.ChannelClosedByBroker, QueueTypeMismatch) as exc:
            log.error("cannot declare %s again: %s", [q.name for q in topology.queues], exc)
            return False
        finally:
            if channel.is_open:
                channel.close()
