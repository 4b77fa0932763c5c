"""A worker started again in a running run (it rejoins after being down) is told, with start_app, the message
ids of the tasks in its queue whose rounds ended meanwhile: it acks those untrained and trains the rest, the
current round's task first. On the in-process broker and on RabbitMQ."""

from __future__ import annotations

import logging
import queue
import time

import pytest

from fl_broker.protocol.control import BadRequest, Request
from fl_broker.protocol.tasks import ResultMessage, TaskMessage
from fl_broker.transport import Delivery, connect
from fl_broker.wire import names
from tests.support.deliveries import weights
from tests.workers.test_result_publish import OPTIONS, deployed_worker, next_delivery


def test_a_rejoining_worker_acks_the_superseded_tasks_untrained_and_trains_the_current_one(
    tmp_path,
    url,
    caplog,  # noqa: F811 (the fixture)
) -> None:
    caplog.set_level(logging.INFO)
    server = connect(url, options=OPTIONS)
    server.declare(names.server_topology())
    worker_transport = connect(url, options=OPTIONS)
    worker = deployed_worker(tmp_path, worker_transport)
    results: queue.Queue[ResultMessage] = queue.Queue()

    def take(delivery: Delivery) -> None:
        results.put(ResultMessage.decode_delivery(delivery))
        delivery.ack()

    subscription = server.consume(names.SERVER_RESULT_QUEUE, take)
    try:
        for rnd in range(4):  # queued while the site was gone: rounds 0 to 2 are over, round 3 is going on
            task = TaskMessage(1, rnd, weights(1.0, task_id=f"run1-train-round{rnd}"))
            server.publish(names.TASK_EXCHANGE, "site-1", task.encode(), message_id=f"m{rnd}")
        worker.cmd_start_app(Request("start_app", {"run": 1, "superseded": ["m0", "m1", "m2", "elsewhere"]}))
        result = results.get(timeout=30)
        assert (result.round, result.shareable.task_id) == (3, "run1-train-round3")
        time.sleep(0.5)
        assert results.empty()  # nothing else was trained
        for rnd in range(3):
            assert f"skipping task run1-train-round{rnd} (round {rnd}): superseded by a later round" in caplog.text
        assert "skipping task run1-train-round3" not in caplog.text
    finally:
        subscription.cancel()
        worker.close()
        worker_transport.close()
    # The skipped tasks were acked: the queue holds nothing but a marker sent after it all.
    server.publish(names.TASK_EXCHANGE, "site-1", b"marker", message_id="marker")
    assert next_delivery(server, names.task_queue("site-1")).message_id == "marker"
    server.close()


def test_start_app_refuses_superseded_ids_that_are_not_strings(tmp_path) -> None:
    transport = connect("memory://superseded-bad", options=OPTIONS)
    worker = deployed_worker(tmp_path, transport)
    try:
        with pytest.raises(BadRequest, match="every superseded message id must be a string"):
            worker.cmd_start_app(Request("start_app", {"run": 1, "superseded": [3]}))
        assert worker.status()["status"] == "stopped"  # deployed, not started
    finally:
        worker.close()
        transport.close()
