"""Real faults on real processes and a real RabbitMQ node: nothing is lost, nothing is counted twice."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from fl_broker.apps.archive import pack_app
from fl_broker.wire import names
from tests.support.federation import SITES, ProcessFederation, make_app, running_federation, set_executor

pytestmark = pytest.mark.rabbitmq

RESULTS = names.SERVER_RESULT_QUEUE
INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)


@pytest.fixture
def federation(tmp_path, rabbitmq_url):
    with running_federation(tmp_path / "ws", rabbitmq_url, client_grace=3.0) as fed:
        yield fed


def final_model(fed: ProcessFederation, run: int = 1) -> np.ndarray:
    return np.load(fed.workspace / "server" / f"run_{run}" / "models" / "server.npy")


def assert_exact(fed: ProcessFederation, rounds: int = 10, run: int = 1) -> None:
    model = final_model(fed, run)
    assert model.dtype == np.float32
    np.testing.assert_array_equal(model, INITIAL + rounds)


def test_worker_killed_mid_task_and_restarted(tmp_path, federation):
    app = make_app(tmp_path, client_args={"sleep_time": 0.4})
    federation.start_job(app)
    federation.wait_for(lambda s: (s["current_round"] or 0) >= 3, what="round 3")
    time.sleep(0.2)  # inside site-1's 0.4 s task
    federation.kill("site-1")
    federation.start_worker("site-1")
    status = federation.wait_finished()
    assert status["phase"] == "finished"
    assert_exact(federation)
    accepted = federation.accepted_per_round()
    assert {r: sorted(sites) for r, sites in accepted.items()} == {r: ["site-1", "site-2"] for r in range(10)}
    assert "site-1 rejoined run 1" in federation.log("server")


def test_worker_that_dies_for_good_does_not_stop_the_run_and_can_rejoin(tmp_path, federation):
    app = make_app(
        tmp_path,
        # 1 s tasks: on a loaded machine the worker's start-up alone can take several seconds, and the run
        # must still be going when it is back
        server_args={"min_clients": 1, "num_rounds": 20, "wait_time_after_min_received": 3, "train_timeout": 5},
        client_args={"sleep_time": 1.0},
    )
    federation.start_job(app)
    federation.wait_for(lambda s: (s["current_round"] or 0) >= 2, what="round 2")
    federation.kill("site-1")  # its task goes back to its queue, where later rounds' tasks pile up behind it
    gone = federation.wait_for(
        lambda s: any(c["site"] == "site-1" and not c["alive"] for c in s["registered_clients"]),
        timeout=20,
        what="site-1 shown as gone",
    )
    assert gone["engine_status"] == "started"
    # Round gone+1 is the first sent without site-1: once it was, every task in site-1's queue is of a round
    # that is over.
    gone_round = gone["current_round"]
    back = federation.wait_for(lambda s: (s["current_round"] or 0) >= gone_round + 2, what="two rounds without it")
    logs_before = len(federation.log("site-1")), len(federation.log("server"))
    federation.start_worker("site-1")
    status = federation.wait_finished()
    assert status["phase"] == "finished"
    assert_exact(federation, rounds=20)
    accepted = federation.accepted_per_round()
    assert all(len(sites) == len(set(sites)) for sites in accepted.values())  # never twice from one site
    assert any("site-1" in accepted.get(r, []) for r in range(back["current_round"] + 1, 20)), accepted
    # Back, it acked the stale tasks untrained (told by the server as it rejoined): it trained only rounds
    # that were still going, and the server refused none of its results as late.
    worker_log, server_log = federation.log("site-1")[logs_before[0] :], federation.log("server")[logs_before[1] :]
    skipped = [int(r) for r in re.findall(r"skipping task run1-train-round(\d+) \(round \d+\): superseded", worker_log)]
    trained = [int(r) for r in re.findall(r"task run1-train-round(\d+) \(train\) done", worker_log)]
    assert skipped and max(skipped) <= gone_round < back["current_round"], (skipped, gone_round)
    assert trained and min(trained) >= back["current_round"], (trained, back["current_round"])
    late = [int(r) for r in re.findall(r"refused result from site-1: result is for round (\d+)", server_log)]
    assert not [r for r in late if r < back["current_round"]], late


def test_server_killed_mid_run_resumes_after_the_last_saved_round(tmp_path, federation):
    app = make_app(tmp_path, client_args={"sleep_time": 0.3})
    federation.start_job(app)
    federation.wait_for(lambda s: (s["current_round"] or 0) >= 4, what="round 4")
    federation.kill("server")
    federation.start_server()
    status = federation.wait_finished()
    assert status["phase"] == "finished"
    assert_exact(federation)
    log = federation.log("server")
    assert "was running when the server stopped: resuming it" in log
    assert "resuming run 1 at round" in log
    # every round was aggregated from exactly one result per site (the redone round included)
    model_rounds = federation.accepted_per_round()
    assert set(model_rounds) == set(range(10))


@pytest.mark.parametrize("how", ["stop_app", "close_connections"])
def test_broker_outage_mid_run(tmp_path, federation, rabbitmq_node, rabbitmq_url, how):
    app = make_app(tmp_path, client_args={"sleep_time": 0.3})
    federation.start_job(app)
    federation.wait_for(lambda s: (s["current_round"] or 0) >= 3, what="round 3")
    if how == "stop_app":
        rabbitmq_node.stop_app()
        time.sleep(2)
        rabbitmq_node.start_app()
    else:
        # server, two workers and this test's admin connection
        assert rabbitmq_node.close_connections(rabbitmq_url.rsplit("/", 1)[1], expect=4) == 4
    status = federation.wait_finished()
    assert status["phase"] == "finished"
    assert_exact(federation)


GATED_TRAINER = """
from pathlib import Path

from fl_broker.fl.numpy_components import NPTrainer
from fl_broker.wire.messages import ReturnCode, make_reply


class GatedTrainer(NPTrainer):
    "NPTrainer that, in round `gated_round`, tells the test it holds the task, then waits for its go."

    def __init__(self, gate, gated_round, **args):
        super().__init__(**args)
        self.gate, self.gated_round = Path(gate), gated_round

    def execute(self, task_name, shareable, context, abort_signal):
        if shareable.get_header("current_round") == self.gated_round:
            (self.gate / context.site_name).touch()  # holds the task
            while not (self.gate / "open").exists():
                if abort_signal.wait(0.05):
                    return make_reply(ReturnCode.TASK_ABORTED)
        return super().execute(task_name, shareable, context, abort_signal)
"""


def gated_app(folder: Path, gate: Path, gated_round: int) -> Path:
    """hello-numpy-sag whose sites, in round `gated_round`, each create the file gate/SITE once they hold the
    task and train it only once the file gate/open exists (the test decides when the results go out)."""
    app = make_app(folder)
    (app / "custom" / "gated_trainer.py").write_text(GATED_TRAINER)
    set_executor(app, "gated_trainer.GatedTrainer", {"gate": str(gate), "gated_round": gated_round})
    return app


def wait_until(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def results_queue_when(node, vhost: str, predicate, what: str) -> dict[str, int]:
    """The server's result queue as the broker counts it, polled until `predicate` holds for it."""
    deadline = time.monotonic() + 30
    while not predicate(counts := node.queue_now(vhost, RESULTS)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}; the queue: {counts}"
        time.sleep(0.1)
    return counts


def test_results_lost_in_a_broker_restart_are_trained_again_and_counted_once(tmp_path, rabbitmq_node, rabbitmq_url):
    """Results travel non-persistent: a broker restart while they wait in the server's queue loses them. The
    server notices its connection was interrupted, sends those sites' tasks again, and the run ends exactly,
    each result counted once.

    Deterministic: the results must be in the queue, not in the server's socket, when the broker restarts (a
    result pushed to the socket can still be taken from there, and then nothing needs sending again). So the
    sites hold round 3's task until the server is stopped and the broker has closed its connection (its
    consumer gone), and only then send their results, into a queue with no consumer."""
    vhost, gate, lost_round = rabbitmq_url.rsplit("/", 1)[1], tmp_path / "gate", 3
    gate.mkdir()
    fed = ProcessFederation(tmp_path / "ws", rabbitmq_url, client_grace=30.0)
    server = None
    try:
        fed.start_server(args=("--task-resend-after", "2"))
        server = fed.procs["server"]
        fed.start_workers()
        fed.start_job(gated_app(tmp_path, gate, lost_round))
        wait_until(lambda: all((gate / site).exists() for site in SITES), f"both sites holding round {lost_round}")
        server.send_signal(signal.SIGSTOP)  # it cannot reconnect, nor read what is already in its socket
        rabbitmq_node.close_connection(vhost, "server")
        gone = results_queue_when(rabbitmq_node, vhost, lambda q: q["consumers"] == 0, "the server's consumer gone")
        # nothing was ever pushed towards the server: a result it held unacked would be ready again now
        assert gone == {"messages_ready": 0, "messages_unacknowledged": 0, "consumers": 0}
        (gate / "open").touch()
        held = results_queue_when(rabbitmq_node, vhost, lambda q: q["messages_ready"] >= 2, "both results queued")
        assert held == {"messages_ready": 2, "messages_unacknowledged": 0, "consumers": 0}
        rabbitmq_node.stop_app()
        rabbitmq_node.start_app()
        assert rabbitmq_node.queue_now(vhost, RESULTS)["messages_ready"] == 0  # both lost
        server.send_signal(signal.SIGCONT)
        status = fed.wait_finished(timeout=120)
        assert status["phase"] == "finished"
        assert_exact(fed)
        resent = re.findall(rf"round {lost_round}: (site-\d) has shown no task .* sending it again", fed.log("server"))
        assert set(resent) == set(SITES), resent  # the task of each lost result
        for site in SITES:  # and each site trained it again
            assert fed.log(site).count(f"task run1-train-round{lost_round} (train) done: OK") >= 2, site
        assert {r: sorted(sites) for r, sites in fed.accepted_per_round().items()} == {
            r: list(SITES) for r in range(10)
        }
    finally:
        (gate / "open").touch()
        if server is not None:
            server.send_signal(signal.SIGCONT)
        fed.close()


def test_a_result_that_arrives_after_its_round_is_refused_as_late(tmp_path, rabbitmq_url):
    fed = ProcessFederation(tmp_path / "ws", rabbitmq_url)
    fed.start_server()
    fed.start_worker("site-1")
    fed.wait_clients(1)
    app = make_app(
        tmp_path,
        server_args={"min_clients": 1, "num_rounds": 10, "wait_time_after_min_received": 0.2},
        client_args={"sleep_time": 0},
    )
    slow_app = make_app(tmp_path / "slow", client_args={"sleep_time": 1.5})
    try:
        fed.start_job(app)  # site-1 runs the fast trainer
        fed.wait_finished()
        # a slow site joins a second run: its answers come after each round ended
        fed.start_worker("site-2")
        fed.wait_clients(2)
        fed.call("upload_app", app="app", archive=pack_app(slow_app))
        fed.call("set_run_number", run=2)
        fed.call("deploy_app", app="app", target="client", sites=["site-2"])
        fed.call("upload_app", app="app", archive=pack_app(app))
        fed.call("deploy_app", app="app", target="server")
        fed.call("deploy_app", app="app", target="client", sites=["site-1"])
        fed.call("start_app", target="all")
        status = fed.wait_finished()
        assert status["phase"] == "finished"
        assert_exact(fed, rounds=10, run=2)
        time.sleep(2)  # the last late answer
        assert "(late or stray)" in fed.log("server")
    finally:
        fed.close()


def test_abort_during_a_round_then_a_new_run(tmp_path, federation):
    slow = make_app(tmp_path / "slow", client_args={"sleep_time": 30})
    federation.start_job(slow)
    federation.wait_for(lambda s: s["phase"] == "gathering", what="a round in progress")
    started = time.monotonic()
    reply = federation.call("abort", target="all")
    assert reply["server"] == "abort requested"
    status = federation.wait_finished(timeout=20)
    assert status["phase"] == "aborted" and time.monotonic() - started < 15
    for site in ("site-1", "site-2"):
        assert "done: TASK_ABORTED" in federation.log(site)  # the executor saw the abort signal
    fast = make_app(tmp_path / "fast")
    federation.start_job(fast, run=2)
    assert federation.wait_finished()["phase"] == "finished"
    assert_exact(federation, run=2)


def test_sigterm_stops_a_worker_without_losing_its_task(tmp_path, federation):
    app = make_app(tmp_path, client_args={"sleep_time": 0.5})
    federation.start_job(app)
    federation.wait_for(lambda s: (s["current_round"] or 0) >= 2, what="round 2")
    federation.kill("site-2", signal.SIGTERM)
    federation.start_worker("site-2")
    assert federation.wait_finished()["phase"] == "finished"
    assert_exact(federation)


def test_full_broker_node_restart_mid_run(tmp_path):
    from fl_broker.ops.localnode import LocalNode

    node = LocalNode(tmp_path / "node")
    node.start()
    fed = None
    try:
        fed = ProcessFederation(tmp_path / "ws", node.amqp_url(), client_grace=30.0)
        fed.start_server()
        fed.start_workers()
        fed.start_job(make_app(tmp_path, client_args={"sleep_time": 0.3}))
        fed.wait_for(lambda s: (s["current_round"] or 0) >= 3, what="round 3")
        node.stop()  # every connection drops; durable queues and persistent messages stay on disk
        node.start()
        status = fed.wait_finished(timeout=180)
        assert status["phase"] == "finished"
        assert_exact(fed)
    finally:
        if fed is not None:
            fed.close()
        node.stop()


@pytest.mark.parametrize(
    "kill_before",
    [
        "server.npy:4",  # round 3 committed, its server.npy not yet replaced (resumed a round behind before)
        "checkpoint.msgpack:4",  # round 4's task sent early, round 3 not yet committed: round 3 is run again
        "engine.json:1:checkpoint.msgpack:10",  # the run finished, the server not yet marked stopped
    ],
)
def test_server_killed_between_its_writes_resumes_to_the_exact_weights(tmp_path, rabbitmq_url, kill_before):
    fed = ProcessFederation(tmp_path / "ws", rabbitmq_url, client_grace=3.0)
    try:
        fed.start_server_killed_before(kill_before)
        fed.start_workers()
        fed.start_job(make_app(tmp_path, client_args={"sleep_time": 0.1}))
        assert fed.wait_exit("server") == 137
        fed.start_server()
        status = fed.wait_finished()
        assert status["phase"] == "finished"
        assert_exact(fed)
        assert "was running when the server stopped: resuming it" in fed.log("server")
    finally:
        fed.close()
