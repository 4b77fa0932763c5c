"""Least privilege, checked on a real node loaded with `fl-broker provision`'s definitions."""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse

import numpy as np
import pika
import pika.exceptions
import pytest

from fl_broker.apps.workspace import SERVER_DIR, Workspace
from fl_broker.errors import AuthenticationFailed, RemoteError, TransportError
from fl_broker.protocol.control import RequestClient
from fl_broker.server.engine import EngineOptions, ServerEngine
from fl_broker.transport import connect
from fl_broker.wire import names
from fl_broker.wire.envelope import Envelope, encode_envelope
from fl_broker.wire.messages import DXO, DataKind

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def site1(provisioned):
    transport = connect(provisioned.url("site-1"), predeclared=True)
    yield transport
    transport.close()


def test_site_reads_its_own_queues_only(provisioned, site1):
    site1.consume(names.task_queue("site-1"), lambda d: None).cancel()
    site1.consume(names.site_control_queue("site-1"), lambda d: None).cancel()
    for queue in (names.task_queue("site-2"), names.site_control_queue("site-2"), names.SERVER_RESULT_QUEUE):
        with pytest.raises(TransportError, match="ACCESS_REFUSED"):
            site1.consume(queue, lambda d: None)


def test_site_cannot_publish_a_task_and_only_the_server_can(provisioned, site1):
    with pytest.raises(TransportError, match="ACCESS_REFUSED"):
        site1.publish(names.TASK_EXCHANGE, "site-2", b"not a task")
    with pytest.raises(TransportError, match="ACCESS_REFUSED"):
        site1.publish(names.EVENT_EXCHANGE, "run.1.round.0.done", b"not an event")
    admin = connect(provisioned.url("admin"))
    try:
        with pytest.raises(TransportError, match="ACCESS_REFUSED"):
            admin.publish(names.TASK_EXCHANGE, "site-1", b"not a task")
    finally:
        admin.close()
    server = connect(provisioned.url("server"))
    try:
        server.publish(names.TASK_EXCHANGE, "site-1", b"a task")
    finally:
        server.close()
    [task] = provisioned.node.get_messages(provisioned.plan.vhost, names.task_queue("site-1"))
    assert task["payload"] == "a task" and task["properties"]["user_id"] == "server"


def test_site_cannot_declare_exchanges_or_other_queues(provisioned):
    site = connect(provisioned.url("site-1"))  # not predeclared: tries to declare the topology
    try:
        with pytest.raises(TransportError, match="ACCESS_REFUSED"):
            site.declare(names.site_topology("site-1"))
        with pytest.raises(TransportError, match="ACCESS_REFUSED"):
            site.declare(names.Topology(exchanges=(), queues=(names.QueueSpec("fl.task.site-1-copy"),)))
    finally:
        site.close()


def test_wrong_password_is_an_authentication_failure(provisioned):
    url = provisioned.url("site-1").replace(urllib.parse.quote(provisioned.plan.account("site-1").password), "x")
    with pytest.raises(AuthenticationFailed):
        connect(url)


def _raw_channel(url: str) -> tuple[pika.BlockingConnection, object]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    return connection, channel


def test_broker_refuses_a_result_claiming_another_user_id(provisioned):
    connection, channel = _raw_channel(provisioned.url("site-1"))
    try:
        props = pika.BasicProperties(user_id="site-2", delivery_mode=2)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.basic_publish(names.RESULT_EXCHANGE, names.SERVER, b"forged", props, mandatory=True)
        assert refused.value.reply_code == 406  # PRECONDITION_FAILED
        assert "site-2" in refused.value.reply_text and "site-1" in refused.value.reply_text
    finally:
        if connection.is_open:
            connection.close()
    assert provisioned.node.get_messages(provisioned.plan.vhost, names.SERVER_RESULT_QUEUE) == []


@pytest.fixture
def engine(provisioned, tmp_path):
    transport = connect(provisioned.url("server"))
    options = EngineOptions(admin_users=frozenset({"admin"}), enforce_site_users=True)
    server = ServerEngine(workspace=Workspace(tmp_path / "ws", SERVER_DIR), transport=transport, options=options)
    server.start()
    yield server
    server.close()
    transport.close()


def _dead_letters(provisioned, count: int, timeout: float = 10) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = provisioned.node.get_messages(provisioned.plan.vhost, names.DEAD_LETTER_QUEUE, 10)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_server_refuses_a_result_for_another_site(provisioned, engine, site1, caplog):
    caplog.set_level(logging.WARNING, logger="fl_broker")
    weights = DXO(DataKind.WEIGHTS, {"numpy_key": np.ones((3, 3), np.float32)}).to_shareable()
    body = encode_envelope(Envelope(kind="result", run=1, fields={"site": "site-2", "round": 0}, shareable=weights))
    site1.publish(names.RESULT_EXCHANGE, names.SERVER, body)  # user_id site-1 (the broker checked it)
    [dead] = _dead_letters(provisioned, 1)
    reason = dead["properties"]["headers"][names.REJECT_REASON_HEADER]
    assert reason == "result from user 'site-1', but only 'site-2' may send it"
    assert any(reason in r.getMessage() for r in caplog.records)


def test_server_refuses_control_requests_from_non_admin_users(provisioned, engine, site1, caplog):
    caplog.set_level(logging.WARNING, logger="fl_broker.server.engine")
    client = RequestClient(site1)
    try:
        for command in ("check_status", "shutdown"):
            with pytest.raises(RemoteError, match="only 'admin' may send it") as refused:
                client.call(names.SERVER, command, {"target": "server"}, timeout=10)
            assert refused.value.kind == "Unauthorized"
        not_site_2 = "register as site 'site-2' from user 'site-1', but only 'site-2' may send it"
        with pytest.raises(RemoteError, match=not_site_2):
            client.call(names.SERVER, "register", {"site": "site-2", "session": "s", "status": {}}, timeout=10)
        assert client.call(names.SERVER, "register", {"site": "site-1", "session": "s", "status": {}}, timeout=10)
    finally:
        client.close()
    assert not engine.shutdown_requested.is_set()
    logged = [r.getMessage() for r in caplog.records]
    assert "refused admin command check_status from user 'site-1', but only 'admin' may send it" in logged
    assert "refused admin command shutdown from user 'site-1', but only 'admin' may send it" in logged

    admin_transport = connect(provisioned.url("admin"))
    admin = RequestClient(admin_transport)
    try:
        status = admin.call(names.SERVER, "check_status", {"target": "server"}, timeout=10)
        assert status
    finally:
        admin.close()
        admin_transport.close()


def test_admin_may_watch_events_but_not_read_site_queues(provisioned, engine):
    admin = connect(provisioned.url("admin"), predeclared=True)
    got = threading.Event()
    try:
        queue = admin.private_queue(((names.EVENT_EXCHANGE, "#"),))
        admin.consume(queue, lambda d: (got.set(), d.ack()))
        server = connect(provisioned.url("server"))
        server.publish(names.EVENT_EXCHANGE, names.event_key(1, "round", 0, "done"), b"{}")
        server.close()
        assert got.wait(10)
        with pytest.raises(TransportError, match="ACCESS_REFUSED"):
            admin.consume(names.task_queue("site-1"), lambda d: None)
    finally:
        admin.close()


def _refused(url: str, action) -> str:  # type: ignore[no-untyped-def]
    """Run `action(channel)` on a fresh confirm-mode channel of `url`; the broker's refusal text."""
    connection, channel = _raw_channel(url)
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            action(channel)
        assert refused.value.reply_code == 403
        return str(refused.value.reply_text)
    finally:
        if connection.is_open:
            connection.close()


@pytest.mark.parametrize("user", ["site-1", "admin"])
def test_only_the_server_writes_into_queues_such_as_the_event_history(provisioned, user):
    url, props = provisioned.url(user), pika.BasicProperties(delivery_mode=2)
    for queue in (names.EVENT_HISTORY_QUEUE, names.task_queue("site-2"), names.SERVER_RESULT_QUEUE):
        text = _refused(url, lambda ch, q=queue: ch.basic_publish("", q, b"forged", props, mandatory=True))
        assert "access to exchange 'amq.default'" in text
    # Nor through fl.reply: a site may only reply to the server's reply queues, the admin not at all.
    text = _refused(url, lambda ch: ch.basic_publish(names.REPLY_EXCHANGE, names.EVENT_HISTORY_QUEUE, b"x", props))
    assert "fl.reply" in text
    server = connect(provisioned.url("server"))
    try:
        server.publish(names.EVENT_EXCHANGE, names.event_key(1, "round", 0, "done"), b"{}")
    finally:
        server.close()
    [event] = provisioned.node.get_messages(provisioned.plan.vhost, names.EVENT_HISTORY_QUEUE)
    assert event["properties"]["user_id"] == "server"


def test_a_site_binds_only_its_own_reply_queues_to_fl_reply(provisioned):
    url = provisioned.url("site-1")
    connection, channel = _raw_channel(url)
    try:
        channel.queue_declare("fl.private.site-1.mine", exclusive=True)
        channel.queue_bind("fl.private.site-1.mine", names.REPLY_EXCHANGE, "fl.private.site-1.mine")
    finally:
        connection.close()
    for key in ("fl.private.server.x1", "fl.private.site-2.x1", "#", "fl.private.*.x1"):

        def bind(channel, key=key):  # type: ignore[no-untyped-def]
            channel.queue_declare("fl.private.site-1.spy", exclusive=True)
            channel.queue_bind("fl.private.site-1.spy", names.REPLY_EXCHANGE, key)

        assert f"access to topic '{key}' in exchange 'fl.reply'" in _refused(url, bind)
    # Copying replies onward into an exchange the site may write to is refused too.
    text = _refused(url, lambda ch: ch.exchange_bind(names.RESULT_EXCHANGE, names.REPLY_EXCHANGE, "#"))
    assert "ACCESS_REFUSED" in text


def test_replies_travel_on_fl_reply_between_provisioned_logins(provisioned, engine, site1):
    """A site registers (the server replies to the site) and the server asks the site (the site replies)."""
    from workers.worker import ClientWorker, worker_workspace

    worker = ClientWorker(site="site-1", workspace=worker_workspace(engine.workspace.root, "site-1"),
                          transport=site1, heartbeat_interval=0.2, server_user="server")  # fmt: skip
    worker.start()
    admin_transport = connect(provisioned.url("admin"), predeclared=True)
    admin = RequestClient(admin_transport)
    try:
        deadline = time.monotonic() + 15
        while "site-1" not in engine.clients.alive():
            assert time.monotonic() < deadline, "site-1 did not register"
            time.sleep(0.1)
        clients = admin.call(names.SERVER, "check_status", {"target": "client"}, timeout=10)["clients"]
        assert clients["site-1"]["ok"], clients
    finally:
        admin.close()
        admin_transport.close()
        worker.close()
