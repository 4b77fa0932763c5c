"""Test-side control of a RabbitMQ node through its management HTTP API (stdlib only)."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any


class BrokerAdmin:
    """Creates/deletes vhosts, lists and drops connections, reads queues, via the management API."""

    def __init__(self, amqp_base: str, mgmt_url: str, *, user: str = "guest", password: str = "guest") -> None:
        # amqp_base: "amqp://user:pass@host:port" (no vhost); URLs of vhosts are built from it
        self.amqp_base = amqp_base.rstrip("/")
        self.mgmt_url = mgmt_url.rstrip("/")
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.user = user

    def api(self, method: str, path: str, body: Any = None, *, timeout: float = 10) -> Any:
        """Call the API; returns decoded JSON or None. Raises urllib.error.HTTPError on failure."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.mgmt_url + path, data=data, method=method)
        req.add_header("Authorization", self._auth)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def amqp_url(self, vhost: str = "/fl") -> str:
        return f"{self.amqp_base}/{urllib.parse.quote(vhost, safe='')}"

    def create_vhost(self, name: str | None = None) -> str:
        """Create vhost `name` (default: a unique one) with full permissions for the admin user; its URL."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        quoted = urllib.parse.quote(name, safe="")
        self.api("PUT", f"/api/vhosts/{quoted}", {})
        self.api("PUT", f"/api/permissions/{quoted}/{self.user}", {"configure": ".*", "write": ".*", "read": ".*"})
        return self.amqp_url(name)

    def delete_vhost(self, name: str) -> None:
        try:
            self.api("DELETE", f"/api/vhosts/{urllib.parse.quote(name, safe='')}")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise

    def connections(self, vhost: str) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/api/vhosts/{urllib.parse.quote(vhost, safe='')}/connections") or [])

    def close_connections(self, vhost: str, *, expect: int = 1, wait: float = 15.0) -> int:
        """Close every client connection of `vhost` (as a broker-side drop); returns how many were closed.

        The management API's connection list lags the broker by a few seconds, so this waits until at
        least `expect` connections are listed (up to `wait` seconds)."""
        deadline = time.monotonic() + wait
        conns = self.connections(vhost)
        while len(conns) < expect and time.monotonic() < deadline:
            time.sleep(0.25)
            conns = self.connections(vhost)
        for conn in conns:
            name = urllib.parse.quote(conn["name"], safe="")
            try:
                self.api("DELETE", f"/api/connections/{name}")
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
        return len(conns)

    def queue(self, vhost: str, name: str) -> dict[str, Any]:
        vq = urllib.parse.quote(vhost, safe="")
        return dict(self.api("GET", f"/api/queues/{vq}/{urllib.parse.quote(name, safe='')}"))

    def get_messages(self, vhost: str, queue: str, count: int = 10) -> list[dict[str, Any]]:
        """Fetch (and requeue) up to `count` messages of a queue, with their properties and headers."""
        vq = urllib.parse.quote(vhost, safe="")
        body = {"count": count, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 1000}
        return list(self.api("POST", f"/api/queues/{vq}/{urllib.parse.quote(queue, safe='')}/get", body))
