"""Quorum and classic queues on the suite's real RabbitMQ node (3.10.8): what the declare makes, a queue that
exists as the other type, and hello-numpy-sag end to end with quorum queues."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import urllib.parse

import numpy as np
import pytest

from fl_broker.errors import QueueTypeMismatch
from fl_broker.ops.localnode import free_port
from fl_broker.transport import TransportOptions, connect
from fl_broker.wire import names
from tests.support.processes import ROOT, assert_exited_cleanly, run_hello_job, spawn

pytestmark = pytest.mark.rabbitmq

INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)


def vhost_of(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path[1:])


def queue_types(node, url: str) -> dict[str, str]:
    vhost = urllib.parse.quote(vhost_of(url), safe="")
    return {q["name"]: q["type"] for q in node.api("GET", f"/api/queues/{vhost}")}


def test_quorum_declares_every_durable_queue_as_quorum_and_reply_queues_stay_classic(rabbitmq_node, rabbitmq_url):
    transport = connect(rabbitmq_url, options=TransportOptions(queue_type="quorum"))
    try:
        transport.declare(names.server_topology())
        transport.declare(names.site_topology("site-1"))
        reply = transport.reply_queue()
        types = queue_types(rabbitmq_node, rabbitmq_url)
        durable = [q.name for t in (names.server_topology(), names.site_topology("site-1")) for q in t.queues]
        assert {name: types[name] for name in durable} == dict.fromkeys(durable, "quorum")
        assert types[reply] == "classic"
        # Per-message TTL (control requests carry their timeout as expiration) is accepted by quorum queues.
        transport.publish(names.CONTROL_EXCHANGE, "site-1", b"x", expiration=0.05)
        transport.declare(names.site_topology("site-1"))  # declaring again with the same type is a no-op
    finally:
        transport.close()


def test_a_queue_of_the_other_type_is_named_with_the_way_out_and_the_transport_goes_on(rabbitmq_url):
    quorum = connect(rabbitmq_url, options=TransportOptions(queue_type="quorum"))
    quorum.declare(names.site_topology("site-1"))
    quorum.close()
    classic = connect(rabbitmq_url)
    try:
        with pytest.raises(QueueTypeMismatch) as caught:
            classic.declare(names.site_topology("site-1"))
        assert caught.value.queue == "fl.task.site-1" and caught.value.current == "quorum"
        assert "run every program with --queue-type quorum" in str(caught.value)
        # The broker's 406 closed the channel; the transport reopened it: other work still goes through.
        classic.declare(names.Topology(exchanges=(), queues=(names.QueueSpec("other.q"),)))
        classic.publish("", "other.q", b"still working")
    finally:
        classic.close()


def test_server_exits_with_one_line_when_its_queues_exist_as_the_type_it_was_not_told(tmp_path, rabbitmq_url):
    quorum = connect(rabbitmq_url, options=TransportOptions(queue_type="quorum"))
    quorum.declare(names.server_topology())
    quorum.close()
    command = [sys.executable, "-m", "fl_broker.cli", "server", "--workspace", str(tmp_path), "--broker", rabbitmq_url]
    done = subprocess.run([*command, "--queue-type", "classic"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "PRECONDITION_FAILED" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if "cannot start" in line]
    assert f"queue {names.SERVER_RESULT_QUEUE!r} exists as a quorum queue" in line
    assert "--queue-type quorum" in line


def test_hello_numpy_sag_with_quorum_queues_and_a_dead_first_url(tmp_path, rabbitmq_node, rabbitmq_url, processes):
    """Queue type from the env file; the server's URL list (env) and the workers' (--broker repeated) start
    with a node that refuses connections."""
    parts = urllib.parse.urlsplit(rabbitmq_url)
    dead = parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{free_port()}").geturl()
    processes.append(
        spawn(tmp_path, "server", env={"FL_BROKER_URL": f"{dead},{rabbitmq_url}", "FL_QUEUE_TYPE": "quorum"})
    )
    for site in ("site-1", "site-2"):
        args = ("worker", "--site", site, "--heartbeat-interval", "1", "--broker", dead)
        processes.append(spawn(tmp_path, *args, broker=rabbitmq_url, env={"FL_QUEUE_TYPE": "quorum"}))
    assert run_hello_job(connect(rabbitmq_url)).phase == "finished"
    assert_exited_cleanly(processes)
    np.testing.assert_array_equal(np.load(tmp_path / "server" / "run_1" / "models" / "server.npy"), INITIAL + 10)
    types = queue_types(rabbitmq_node, rabbitmq_url)
    for queue in (names.SERVER_RESULT_QUEUE, names.task_queue("site-1"), names.site_control_queue("site-2")):
        assert types[queue] == "quorum"


def two_names_of_the_node(url: str) -> str:
    """The suite's node under two host names: for --queue-type auto, two URLs are a cluster."""
    parts = urllib.parse.urlsplit(url)
    return f"{url},{parts._replace(netloc=parts.netloc.replace('127.0.0.1', 'localhost')).geturl()}"


def test_auto_makes_new_queues_quorum_on_a_cluster_and_keeps_the_type_of_queues_that_exist(
    rabbitmq_node, rabbitmq_url, caplog
):
    caplog.set_level(logging.WARNING, logger="fl_broker.transport")
    classic = connect(rabbitmq_url, options=TransportOptions(queue_type="classic"))
    classic.declare(names.site_topology("site-1"))
    classic.close()
    auto = connect(two_names_of_the_node(rabbitmq_url), options=TransportOptions(queue_type="auto"))
    try:
        auto.declare(names.server_topology())
        auto.declare(names.site_topology("site-1"))  # no 406: the site's classic queues are kept
        auto.declare(names.site_topology("site-2"))
        auto.publish(names.TASK_EXCHANGE, "site-1", b"routed")  # the bindings were declared too
    finally:
        auto.close()
    types = queue_types(rabbitmq_node, rabbitmq_url)
    assert types[names.SERVER_RESULT_QUEUE] == types[names.task_queue("site-2")] == "quorum"
    assert types[names.task_queue("site-1")] == types[names.site_control_queue("site-1")] == "classic"
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("fl_broker")]
    line = next(w for w in warnings if names.task_queue("site-1") in w)
    assert "exists as a classic queue: keeping it so (new queues are quorum here)" in line
    assert "rabbitmqctl delete_queue fl.task.site-1" in line and "--queue-type quorum" in line
    assert not any(names.task_queue("site-2") in w for w in warnings)


def test_a_server_left_at_auto_runs_on_queues_that_exist_as_quorum(tmp_path, rabbitmq_url, processes):
    quorum = connect(rabbitmq_url, options=TransportOptions(queue_type="quorum"))
    quorum.declare(names.server_topology())
    processes.append(spawn(tmp_path, "server", broker=rabbitmq_url, env={}))
    try:
        deadline = time.monotonic() + 60
        while quorum.consumer_count(names.SERVER_CONTROL_QUEUE) == 0:
            assert processes[-1].poll() is None, processes[-1].stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the server never consumed its control queue"
            time.sleep(0.2)
    finally:
        quorum.close()
    log_text = (tmp_path / "server" / "log.txt").read_text()
    assert f"queue {names.SERVER_RESULT_QUEUE!r} exists as a quorum queue: keeping it so" in log_text
