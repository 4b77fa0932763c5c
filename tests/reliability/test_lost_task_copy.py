"""A site's copy of a round's task that never reaches its queue (its binding gone while the server publishes:
the publish is still confirmed, as when a copy was dropped on a cluster) is noticed from the site's status
and sent again: the run finishes with the exact weights, each site's result counted once per round."""

from __future__ import annotations

import time
import urllib.parse

import numpy as np
import pytest

from tests.support.federation import ProcessFederation, make_app

pytestmark = pytest.mark.rabbitmq

INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)


def binding_path(vhost: str, site: str) -> str:
    quoted = urllib.parse.quote(vhost, safe="")
    return f"/api/bindings/{quoted}/e/fl.task/q/fl.task.{site}"


def wait_log(fed: ProcessFederation, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in fed.log("server"):
        assert time.monotonic() < deadline, f"{text!r} not in the server's log"
        time.sleep(0.2)


def test_a_task_copy_that_never_reached_its_site_is_sent_again_and_counted_once(tmp_path, rabbitmq_node, rabbitmq_url):
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(rabbitmq_url).path[1:])
    fed = ProcessFederation(tmp_path / "ws", rabbitmq_url, client_grace=5.0)
    try:
        fed.start_server(args=("--task-resend-after", "2"))
        fed.start_workers()
        fed.start_job(make_app(tmp_path, client_args={"sleep_time": 0.3}))  # min_clients 2: a round waits
        fed.wait_for(lambda s: (s["current_round"] or 0) >= 3, what="round 3")
        rabbitmq_node.api("DELETE", binding_path(vhost, "site-2") + "/site-2")  # its copies now go nowhere
        wait_log(fed, "site-2 has shown no task")  # noticed (and sent again, still into nothing)
        rabbitmq_node.api("POST", binding_path(vhost, "site-2"), {"routing_key": "site-2"})
        status = fed.wait_finished(timeout=120)
        assert status["phase"] == "finished"
        model = np.load(fed.workspace / "server" / "run_1" / "models" / "server.npy")
        np.testing.assert_array_equal(model, INITIAL + 10)
        accepted = fed.accepted_per_round()
        assert {r: sorted(sites) for r, sites in accepted.items()} == {r: ["site-1", "site-2"] for r in range(10)}
        for name in ("fl.task.site-1", "fl.task.site-2", "fl.result.server"):
            deadline = time.monotonic() + 30  # the management stats lag a few seconds
            while (queue := rabbitmq_node.queue(vhost, name)).get("messages_unacknowledged") != 0:
                assert time.monotonic() < deadline, queue
                time.sleep(1)
    finally:
        fed.close()
