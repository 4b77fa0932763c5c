"""Messaging: one interface (`base`), a RabbitMQ implementation and an in-process one."""

from __future__ import annotations

from fl_broker.transport.base import Delivery, Handler, Subscription, Transport, TransportOptions

__all__ = ["Delivery", "Handler", "Subscription", "Transport", "TransportOptions", "connect"]


def connect(url: str, *, options: TransportOptions | None = None) -> Transport:
    """Open a transport for `url`: `amqp://` / `amqps://` for RabbitMQ, `memory://NAME` for the in-process
    broker registered under NAME."""
    if url.startswith(("amqp://", "amqps://")):
        from fl_broker.transport.rabbitmq import RabbitMQTransport

        return RabbitMQTransport(url, options=options)
    if url.startswith("memory://"):
        from fl_broker.transport.memory import MemoryBroker

        return MemoryBroker.named(url[len("memory://") :]).connect(user="guest", options=options)
    raise ValueError(f"unsupported broker URL scheme in {url!r}: expected amqp://, amqps:// or memory://")
