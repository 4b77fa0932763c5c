"""The `broker` fixture: every contract test runs once on the in-process broker and once on RabbitMQ."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from fl_broker.transport import Transport, TransportOptions, connect
from fl_broker.transport.memory import MemoryBroker, MemoryTransport

# Bounded retries and short backoff, so a broken node fails a test instead of hanging it.
DEFAULT_OPTIONS = TransportOptions(connect_attempts=20, backoff_initial=0.2, backoff_max=1.0, publish_timeout=30.0)

MEMORY_LOGIN = "guest"


class BrokerHarness:
    """One isolated broker for one test: new connections to it, dropping them, and cleanup."""

    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self._transports: list[Transport] = []
        if kind == "memory":
            self._memory = MemoryBroker()
            self.login = MEMORY_LOGIN
        else:
            self._node: Any = request.getfixturevalue("rabbitmq_node")
            self._url: str = request.getfixturevalue("rabbitmq_url")
            parts = urlsplit(self._url)
            self.login = unquote(parts.username or "guest")
            self.vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"

    @staticmethod
    def options(**changes: Any) -> TransportOptions:
        """The harness defaults with some fields changed, e.g. `options(heartbeat=2)`."""
        return dataclasses.replace(DEFAULT_OPTIONS, **changes)

    def connect(self, options: TransportOptions | None = None) -> Transport:
        """A new connection to this test's broker; closed at teardown."""
        options = options or DEFAULT_OPTIONS
        if self.kind == "memory":
            transport: Transport = self._memory.connect(user=self.login, options=options)
        else:
            transport = connect(self._url, options=options)
        self._transports.append(transport)
        return transport

    def drop_connections(self) -> None:
        """Drop every connection the way a network failure or broker restart would."""
        if self.kind == "memory":
            for transport in self._transports:
                assert isinstance(transport, MemoryTransport)
                transport.simulate_connection_loss()
        else:
            open_transports = [t for t in self._transports if not getattr(t, "_closed", False)]
            self._node.close_connections(self.vhost, expect=len(open_transports))

    def close_all(self) -> None:
        for transport in reversed(self._transports):
            transport.close()


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerHarness]:
    """An isolated broker for this test: a fresh MemoryBroker, or a fresh vhost on the RabbitMQ node."""
    harness = BrokerHarness(request.param, request)
    try:
        yield harness
    finally:
        harness.close_all()
