"""The RabbitMQ transport, the only package of fl-broker that imports pika: `connection` (the transport and
its I/O thread), `consumer` (subscriptions), `amqp` (pika-level helpers)."""

from __future__ import annotations

from fl_broker.transport.rabbitmq.amqp import raise_socket_read_size, safe_url
from fl_broker.transport.rabbitmq.connection import RabbitMQTransport

__all__ = ["RabbitMQTransport", "raise_socket_read_size", "safe_url"]
