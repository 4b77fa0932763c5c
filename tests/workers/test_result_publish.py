"""A worker whose result cannot be published (no result queue: unroutable, as when its node is down) retries
for a while, then gives the task back to its queue instead of holding it unacked; once the result queue is
back the task is redone and its result sent, and nothing stays held. On the in-process broker and on
RabbitMQ."""

from __future__ import annotations

import logging
import queue
import time
from pathlib import Path

import numpy as np

from fl_broker.apps.archive import pack_app, unpack_app
from fl_broker.protocol.control import Request
from fl_broker.protocol.tasks import ResultMessage, TaskMessage
from fl_broker.transport import Delivery, Transport, TransportOptions, connect
from fl_broker.wire import names
from fl_broker.wire.names import EXCHANGES, Topology
from tests.support.deliveries import weights
from workers.worker import ClientWorker, worker_workspace

APP = Path(__file__).resolve().parents[2] / "apps" / "hello-numpy-sag"
OPTIONS = TransportOptions(connect_attempts=20, backoff_initial=0.2, backoff_max=1.0, publish_timeout=30.0)


def started_worker(root: Path, transport: Transport) -> ClientWorker:
    """site-1 with hello-numpy-sag started for run 1, retrying a refused result for 0.5 s only."""
    worker = deployed_worker(root, transport)
    worker.cmd_start_app(Request("start_app", {"run": 1}))
    return worker


def deployed_worker(root: Path, transport: Transport) -> ClientWorker:
    """site-1 with hello-numpy-sag deployed for run 1, its queues declared, its app not started yet."""
    worker = ClientWorker(
        site="site-1",
        workspace=worker_workspace(root, "site-1"),
        transport=transport,
        heartbeat_interval=60,  # no server here: its registration just fails, quietly
        request_timeout=1,
        result_retry=0.5,
    )
    worker.start()
    unpack_app(pack_app(APP), worker.workspace.app_dir(1))
    worker.run_number, worker.app_name = 1, APP.name
    return worker


def next_delivery(transport: Transport, queue_name: str, timeout: float = 30) -> Delivery:
    got: queue.Queue[Delivery] = queue.Queue()

    def take(delivery: Delivery) -> None:
        delivery.ack()
        got.put(delivery)

    subscription = transport.consume(queue_name, take)
    try:
        return got.get(timeout=timeout)
    finally:
        subscription.cancel()


def test_a_result_that_cannot_be_published_gives_its_task_back(tmp_path, url, caplog) -> None:
    caplog.set_level(logging.INFO)
    server = connect(url, options=OPTIONS)
    worker_transport = connect(url, options=OPTIONS)
    server.declare(Topology(exchanges=EXCHANGES, queues=()))  # fl.result exists, its queue does not yet
    worker = started_worker(tmp_path, worker_transport)
    try:
        task = TaskMessage(1, 0, weights(1.0))
        server.publish(names.TASK_EXCHANGE, "site-1", task.encode(), correlation_id=task.shareable.task_id)
        deadline = time.monotonic() + 30
        while caplog.text.count("the task goes back to be redone") < 2:  # given back, redelivered, again
            assert time.monotonic() < deadline, caplog.text[-3000:]
            time.sleep(0.05)
        assert worker.status()["done"] is None

        server.declare(names.server_topology())  # the result queue is back: the next attempt goes through
        result = ResultMessage.decode_delivery(next_delivery(server, names.SERVER_RESULT_QUEUE))
        assert (result.site, result.round, result.shareable.task_id) == ("site-1", 0, task.shareable.task_id)
        assert result.shareable.dxo is not None
        np.testing.assert_array_equal(result.shareable.dxo.data["numpy_key"], np.full((3, 3), 2.0, np.float32))
        deadline = time.monotonic() + 10
        while worker.status()["done"] != task.shareable.task_id:  # acked once its result was confirmed
            assert time.monotonic() < deadline, worker.status()
            time.sleep(0.05)
    finally:
        worker.close()
        worker_transport.close()
    # Nothing was left in the task queue, unacked or ready: the next delivery is a marker sent after it all.
    server.publish(names.TASK_EXCHANGE, "site-1", b"marker", message_id="marker")
    assert next_delivery(server, names.task_queue("site-1")).message_id == "marker"
    server.close()
