"""An in-process broker with RabbitMQ's semantics, for simulation and fast tests: `broker` (exchanges,
queues, routing, dead-lettering) and `connection` (one Transport per participant)."""

from __future__ import annotations

from fl_broker.transport.memory.broker import MemoryBroker, QueuedMessage, topic_matches
from fl_broker.transport.memory.connection import MemoryTransport

__all__ = ["MemoryBroker", "MemoryTransport", "QueuedMessage", "topic_matches"]
