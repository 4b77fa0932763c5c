"""Messaging: one interface (`base`), a RabbitMQ implementation and an in-process one."""

from __future__ import annotations

import dataclasses

from fl_broker.ops.tls import TlsFiles
from fl_broker.transport.base import Delivery, Handler, Subscription, Transport, TransportOptions
from fl_broker.transport.chunking import Pieces

__all__ = ["Delivery", "Handler", "Pieces", "Subscription", "TlsFiles", "Transport", "TransportOptions", "connect"]


def connect(
    url: str,
    *,
    options: TransportOptions | None = None,
    tls: TlsFiles | None = None,
    predeclared: bool = False,
) -> Transport:
    """Open a transport for `url`: `amqp://` / `amqps://` for RabbitMQ, `memory://NAME` for the in-process
    broker registered under NAME.

    `tls` (amqps:// only) names the CA to trust and an optional client certificate; an amqps:// URL without
    it trusts the system's CAs. `predeclared=True` is for least-privilege accounts (see fl_broker.ops.provision):
    the operator loaded the topology from definitions, so `declare` does nothing and a missing queue shows
    up as the broker's NOT_FOUND when consuming."""
    if predeclared:
        options = dataclasses.replace(options or TransportOptions(), predeclared=True)
    if url.startswith(("amqp://", "amqps://")):
        from fl_broker.transport.rabbitmq import RabbitMQTransport

        if url.startswith("amqp://") and tls is not None:
            raise ValueError("TLS files were given for a plain amqp:// URL; use amqps://")
        context = (tls or TlsFiles()).context() if url.startswith("amqps://") else None
        return RabbitMQTransport(url, options=options, ssl_context=context)
    if url.startswith("memory://"):
        from fl_broker.transport.memory import MemoryBroker

        return MemoryBroker.named(url[len("memory://") :]).connect(user="guest", options=options)
    raise ValueError(f"unsupported broker URL scheme in {url!r}: expected amqp://, amqps:// or memory://")
