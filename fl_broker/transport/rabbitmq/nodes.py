"""The broker nodes a RabbitMQ transport may connect to: each node's connection parameters (heartbeat,
timeouts, TLS), and the nodes tried in turn with bounded, jittered backoff."""

from __future__ import annotations

import logging
import random
import ssl
import threading
from collections.abc import Callable, Sequence

import pika
import pika.exceptions as pe
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from fl_broker.errors import AuthenticationFailed, ConnectionLost
from fl_broker.transport.base import TransportOptions
from fl_broker.transport.rabbitmq import amqp
from fl_broker.transport.urls import host_of, split_broker_urls

log = logging.getLogger(__name__)

_FRAME_MAX = 131072  # pika's ceiling
# What a failed attempt raises. pika raises its connector's own errors as they are, e.g. AMQPConnectorStackTimeout
# from a node that takes the TCP connection but never answers (paused): that one used to end the I/O thread.
_CONNECT_ERRORS = (*amqp.CONNECTION_ERRORS, pe.AMQPError, AMQPConnectorException)


class Nodes:
    """The nodes of one transport, (host, parameters) each, and which one to try first."""

    @classmethod
    def of(cls, url: str | Sequence[str], options: TransportOptions, ssl_context: ssl.SSLContext | None) -> Nodes:
        """The nodes named by `url` ("URL1,URL2,..." or a sequence of URLs)."""
        urls = split_broker_urls(url) if isinstance(url, str) else split_broker_urls(",".join(url))
        return cls(node_parameters(urls, options, ssl_context), urls)

    def __init__(self, nodes: list[tuple[str, pika.ConnectionParameters]], urls: Sequence[str]) -> None:
        self.nodes = nodes
        self.user = str(nodes[0][1].credentials.username)
        # For logs: never the password, and how many other nodes there are.
        self.description = amqp.safe_url(urls[0]) + (f" (+{len(urls) - 1} more nodes)" if len(urls) > 1 else "")
        self._next = 0  # the node tried first on the next attempt
        self._last_host: str | None = None  # the node of the last connection, for the failover log line

    def connect(
        self,
        options: TransportOptions,
        stopping: threading.Event,
        use: Callable[[pika.BlockingConnection, str], None],
    ) -> None:
        """Connect to the first node that answers and hand the connection and its host to `use` (its errors
        count as a failed attempt too). Backs off only when no node answered; raises AuthenticationFailed at
        once, ConnectionLost after `options.connect_attempts` rounds (0: never), amqp.Stopped once `stopping`
        is set."""
        attempts = 0
        while True:
            if stopping.is_set():
                raise amqp.Stopped
            try:
                use(*self._try_each())
                return
            except AuthenticationFailed:
                raise
            except _CONNECT_ERRORS as exc:
                attempts += 1
                if options.connect_attempts and attempts >= options.connect_attempts:
                    raise ConnectionLost(
                        f"cannot connect to {self.description} after {attempts} attempts: {exc}"
                    ) from exc
                delay = min(options.backoff_max, options.backoff_initial * 2 ** (attempts - 1))
                delay *= random.uniform(0.5, 1.0)
                log.warning("cannot connect to %s (%s); retrying in %.1f s", self.description, exc, delay)
                stopping.wait(delay)

    def lost(self) -> str:
        """The connection to the current node was lost: its host; the next attempt starts at another node,
        since that one may be gone."""
        host = self.nodes[self._next][0]
        if len(self.nodes) > 1:
            self._next = (self._next + 1) % len(self.nodes)
        return host

    def _try_each(self) -> tuple[pika.BlockingConnection, str]:
        """Try every node once, in turn; raise the last node's error if none answered."""
        for turn in range(len(self.nodes)):
            index = (self._next + turn) % len(self.nodes)
            host, params = self.nodes[index]
            try:
                conn = _open(host, params)
            except _CONNECT_ERRORS as exc:
                if turn == len(self.nodes) - 1:
                    raise
                log.warning("cannot connect to %s (%s); trying the next node", host, exc)
                continue
            if self._last_host not in (None, host):
                log.warning("failed over from node %s to node %s", self._last_host, host)
            self._next, self._last_host = index, host
            return conn, host
        raise AssertionError("no nodes")  # node_parameters never returns an empty list


def parameters(url: str, options: TransportOptions, ssl_context: ssl.SSLContext | None) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.heartbeat = options.heartbeat
    params.blocked_connection_timeout = max(options.publish_timeout, 60.0)
    params.connection_attempts = 1
    params.socket_timeout = 10
    params.frame_max = _FRAME_MAX
    # Named after the participant, so operators (and tests) can tell in the management UI whose
    # connection is on which node.
    params.client_properties = {"connection_name": options.client_name or str(params.credentials.username)}
    if ssl_context is not None:
        params.ssl_options = pika.SSLOptions(ssl_context, server_hostname=params.host)
    return params


def node_parameters(
    urls: list[str], options: TransportOptions, ssl_context: ssl.SSLContext | None
) -> list[tuple[str, pika.URLParameters]]:
    """(scheme://host:port, parameters) per node of a cluster. Each node's TLS server name is its own host,
    so every certificate is checked against the name it was reached by."""
    return [(host_of(url), parameters(url, options, ssl_context)) for url in urls]


def _open(host: str, params: pika.ConnectionParameters) -> pika.BlockingConnection:
    try:
        return pika.BlockingConnection(params)
    except pe.ConnectionClosedByBroker as exc:
        if exc.reply_code in amqp.AUTH_CODES:
            raise AuthenticationFailed(f"{host}: {exc.reply_text}") from exc
        raise
    except (pe.ProbableAuthenticationError, pe.AuthenticationError, pe.ProbableAccessDeniedError) as exc:
        raise AuthenticationFailed(f"{host}: {exc}") from exc
