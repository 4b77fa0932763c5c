"""Messaging: one interface (`base`), a RabbitMQ implementation and an in-process one."""

from __future__ import annotations

import logging
from typing import Any

from fl_broker.names import Topology
from fl_broker.tls import TlsFiles
from fl_broker.transport.base import Delivery, Handler, Subscription, Transport, TransportOptions

__all__ = ["Delivery", "Handler", "Subscription", "TlsFiles", "Transport", "TransportOptions", "connect"]

log = logging.getLogger(__name__)


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
    it trusts the system's CAs. `predeclared=True` is for least-privilege accounts (see fl_broker.provision):
    the operator loaded the topology from definitions, so `declare` does nothing and a missing queue shows
    up as the broker's NOT_FOUND when consuming."""
    if url.startswith(("amqp://", "amqps://")):
        from fl_broker.transport.rabbitmq import RabbitMQTransport

        if url.startswith("amqp://") and tls is not None:
            raise ValueError("TLS files were given for a plain amqp:// URL; use amqps://")
        context = (tls or TlsFiles()).context() if url.startswith("amqps://") else None
        transport: Transport = RabbitMQTransport(url, options=options, ssl_context=context)
    elif url.startswith("memory://"):
        from fl_broker.transport.memory import MemoryBroker

        transport = MemoryBroker.named(url[len("memory://") :]).connect(user="guest", options=options)
    else:
        raise ValueError(f"unsupported broker URL scheme in {url!r}: expected amqp://, amqps:// or memory://")
    return _Predeclared(transport) if predeclared else transport


class _Predeclared(Transport):
    """A transport whose `declare` is a no-op (the topology exists already); everything else is delegated."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner
        self.user = inner.user
        self.options = inner.options

    def declare(self, topology: Topology) -> None:
        log.debug("topology is predeclared; not declaring %d queue(s)", len(topology.queues))

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        headers: dict[str, Any] | None = None,
        expiration: float | None = None,
    ) -> None:
        self._inner.publish(
            exchange,
            routing_key,
            body,
            message_id=message_id,
            correlation_id=correlation_id,
            reply_to=reply_to,
            headers=headers,
            expiration=expiration,
        )

    def consume(self, queue: str, handler: Handler) -> Subscription:
        return self._inner.consume(queue, handler)

    def reply_queue(self) -> str:
        return self._inner.reply_queue()

    def private_queue(self, bindings: tuple[tuple[str, str], ...]) -> str:
        return self._inner.private_queue(bindings)

    def close(self) -> None:
        self._inner.close()
