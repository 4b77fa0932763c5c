"""Suite-wide fixtures: one private RabbitMQ node per session, one fresh vhost per test.

Set FL_BROKER_URL (amqp://user:pass@host:port[/vhost]) and FL_BROKER_MGMT_URL (http://host:port) to run
against an existing broker instead; its user needs the administrator tag (vhosts are created per test).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker_admin import BrokerAdmin


class RabbitNode(BrokerAdmin):
    """What the `rabbitmq_node` fixture yields: admin helpers plus, for a suite-started node, rabbitmqctl."""

    def __init__(self, amqp_base: str, mgmt_url: str, node: object | None = None) -> None:
        parsed = urllib.parse.urlsplit(amqp_base)
        super().__init__(
            f"{parsed.scheme}://{parsed.netloc}",
            mgmt_url,
            user=urllib.parse.unquote(parsed.username or "guest"),
            password=urllib.parse.unquote(parsed.password or "guest"),
        )
        self.node = node  # a fl_broker.ops.localnode.LocalNode, or None for an external broker

    def ctl(self, *args: str) -> str:
        if self.node is None:
            pytest.skip("rabbitmqctl needs the suite's own node (FL_BROKER_URL is set)")
        return self.node.ctl(*args)  # type: ignore[attr-defined, no-any-return]

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup")

    def queue_now(self, vhost: str, queue: str) -> dict[str, int]:
        """`messages_ready`, `messages_unacknowledged` and `consumers` of `queue` as its queue process counts
        them right now (rabbitmqctl, ~0.7 s): the management API's figures are up to 5 s old (its statistics
        interval), too old to prove that a queue had no consumer when its messages arrived."""
        fields = ("messages_ready", "messages_unacknowledged", "consumers")
        rows = json.loads(self.ctl("list_queues", "-p", vhost, "name", *fields, "--formatter", "json"))
        row = next((r for r in rows if r["name"] == queue), None)
        if row is None:
            raise AssertionError(f"no queue {queue!r} in vhost {vhost!r}")
        return {field: int(row[field]) for field in fields}

    def close_connection(self, vhost: str, client_name: str, *, wait: float = 15.0) -> None:
        """Close, from the broker's side, the one connection of `vhost` that calls itself `client_name`
        (fl-broker names its connections after the participant: "server", "site-1" ...). The broker then
        ends its channels at once, so its consumers are gone and what it held unacked is ready again, even
        if the client is not reading its socket. The management API lists a new connection a few seconds
        late, hence `wait`."""
        deadline = time.monotonic() + wait
        while True:
            named = [
                c
                for c in self.connections(vhost)
                if c.get("client_properties", {}).get("connection_name") == client_name
            ]
            if len(named) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert len(named) == 1, f"{len(named)} connections of {client_name!r} in vhost {vhost!r}, not 1"
        self.api("DELETE", f"/api/connections/{urllib.parse.quote(named[0]['name'], safe='')}")


def _fail_or_skip(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def rabbitmq_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """The session's RabbitMQ node (started once, stopped at the end), or the broker of FL_BROKER_URL."""
    url = os.environ.get("FL_BROKER_URL")
    if url:
        mgmt = os.environ.get("FL_BROKER_MGMT_URL")
        if not mgmt:
            _fail_or_skip("FL_BROKER_URL is set but FL_BROKER_MGMT_URL is not")
        yield RabbitNode(url, mgmt or "")
        return
    from fl_broker.ops.localnode import RABBITMQ_BIN, LocalNode, NodeError

    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        _fail_or_skip(f"RabbitMQ is not installed ({RABBITMQ_BIN}); run deploy/rabbitmq/local-node.sh")
    node = LocalNode(Path(tmp_path_factory.mktemp("rabbitmq")))
    try:
        node.start()
    except (NodeError, OSError) as exc:
        _fail_or_skip(f"cannot start a RabbitMQ node: {exc}")
    try:
        yield RabbitNode(node.amqp_url("/"), node.mgmt_url, node)
    finally:
        node.stop(fast=True)  # a throwaway node: killing it takes 0.2 s, a graceful stop 6-9 s


@pytest.fixture
def rabbitmq_url(rabbitmq_node: RabbitNode) -> Iterator[str]:
    """AMQP URL of a fresh vhost for this test only (deleted afterwards)."""
    vhost = f"test-{uuid.uuid4().hex[:12]}"
    url = rabbitmq_node.create_vhost(vhost)
    try:
        yield url
    finally:
        rabbitmq_node.delete_vhost(vhost)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; any still running at the end is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(autouse=True)
def _program_log_handlers_end_with_their_test() -> Iterator[None]:
    """A program's main() run in a test configures the root logger (e.g. a handler on that test's captured
    stderr); later tests must not log through it once that stream is closed."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in before and not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
