"""A standby server on the same workspace, on the suite's real RabbitMQ node: it waits without consuming, takes
over when the active server is killed (SIGKILL) or hangs (SIGSTOP past the heartbeat timeout), finishes the
run with the exact weights, and a hung server that wakes up after being replaced exits instead of acting."""

from __future__ import annotations

import json
import signal
import time

import pytest

from fl_broker.wire import names
from tests.support.federation import ProcessFederation, make_app
from tests.support.standby import assert_each_result_counted_once, assert_exact, assert_nothing_unacked, start_pair

pytestmark = pytest.mark.rabbitmq


def test_the_standby_waits_without_consuming_and_takes_over_from_a_killed_server(tmp_path, rabbitmq_node, rabbitmq_url):
    fed = ProcessFederation(tmp_path / "ws", rabbitmq_url, client_grace=3.0)
    try:
        start_pair(fed)
        active, standby = fed.procs["server"].pid, fed.procs["standby"].pid
        queues = (names.SERVER_RESULT_QUEUE, names.SERVER_CONTROL_QUEUE, names.SERVER_STANDBY_QUEUE)
        counts = {queue: fed.transport.consumer_count(queue) for queue in queues}  # exact, unlike the stats
        # one consumer each on the server's queues: the active server's; the standby only on its own queue
        assert counts[names.SERVER_RESULT_QUEUE] == counts[names.SERVER_CONTROL_QUEUE] == 1, counts
        assert counts[names.SERVER_STANDBY_QUEUE] == 1, counts
        status = fed.status()
        assert status["active_server"]["pid"] == active and status["active_server"]["epoch"] == 1
        fed.start_job(make_app(tmp_path, client_args={"sleep_time": 0.3}))
        fed.wait_for(lambda s: (s["current_round"] or 0) >= 3, what="round 3")
        fed.kill("server")  # SIGKILL: the broker sees the socket close and frees the lock at once
        killed = time.monotonic()
        status = fed.wait_for(lambda s: s["active_server"]["pid"] == standby, what="the standby to take over")
        print(f"\nstandby answered as the active server {time.monotonic() - killed:.2f} s after the kill")
        assert status["active_server"]["epoch"] == 2 and status["standby_servers"] == 0
        status = fed.wait_finished()
        assert status["phase"] == "finished"
        assert_exact(fed)
        assert_each_result_counted_once(fed)
        assert "was running when the server stopped: resuming it" in fed.log("server")
        assert_nothing_unacked(rabbitmq_node, rabbitmq_url)
        active_file = json.loads((fed.workspace / "server" / "active.json").read_text())
        assert active_file["pid"] == standby and active_file["epoch"] == 2
    finally:
        fed.procs.pop("server", None)
        fed.close()


def test_a_hung_server_replaced_by_the_standby_exits_when_it_wakes(tmp_path, rabbitmq_node, rabbitmq_url):
    fed = ProcessFederation(tmp_path / "ws", rabbitmq_url, client_grace=3.0)
    try:
        start_pair(fed, "--heartbeat", "2")  # the broker drops a silent connection after ~2 heartbeats
        standby = fed.procs["standby"].pid
        fed.start_job(make_app(tmp_path, client_args={"sleep_time": 0.3}))
        fed.wait_for(lambda s: (s["current_round"] or 0) >= 3, what="round 3")
        fed.procs["server"].send_signal(signal.SIGSTOP)
        hung = time.monotonic()
        fed.wait_for(lambda s: s["active_server"]["pid"] == standby, timeout=60, what="the standby to take over")
        print(f"\nstandby took over {time.monotonic() - hung:.1f} s after the active server hung")
        fed.procs["server"].send_signal(signal.SIGCONT)
        assert fed.wait_exit("server", timeout=30) == 1  # fenced: it ended itself
        assert "is no longer the active one; exiting at once" in fed.log("server")
        status = fed.wait_finished()
        assert status["phase"] == "finished"
        assert_exact(fed)
        assert_each_result_counted_once(fed)
        assert fed.status()["active_server"]["pid"] == standby
        assert_nothing_unacked(rabbitmq_node, rabbitmq_url)
    finally:
        fed.procs["server"].send_signal(signal.SIGCONT)
        fed.close()
