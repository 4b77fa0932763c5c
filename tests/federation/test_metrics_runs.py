"""Metrics end to end, on both transports: an app whose sites report a loss that falls with the rounds (and
site-1 a NaN loss in round 1), run in one process (simulate) and as processes over the suite's RabbitMQ node.
The server writes run_N/metrics.jsonl and TensorBoard files (read back here), refuses the NaN result naming
site and round, finishes the run, and answers check_status and show_metrics; on RabbitMQ the lifecycle events
in fl.event.history carry headers a person can read in the management UI."""

from __future__ import annotations

import json
import logging
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from fl_broker.cli import _make_worker
from fl_broker.cli.simulate import simulate
from tests.support.federation import make_app, running_federation

LOSSY_TRAINER = """
import math

from fl_broker import DXO, DataKind, MetaKey
from fl_broker.fl.executor import Executor


class LossyTrainer(Executor):
    # hello-numpy's training (add 1), with a loss of (site number) / (round + 1); site-1's is NaN in round 1
    def execute(self, task_name, shareable, context, abort_signal):
        rnd = shareable.get_header("current_round")
        site = int(context.site_name.rsplit("-", 1)[1])
        loss = math.nan if (site, rnd) == (1, 1) else site / (rnd + 1)
        weights = {name: value + 1 for name, value in shareable.dxo.data.items()}
        meta = {MetaKey.METRICS: {"loss": loss}, MetaKey.NUM_STEPS_CURRENT_ROUND: site}  # site-2 counts twice
        return DXO(DataKind.WEIGHTS, weights, meta=meta).to_shareable()
"""

ROUNDS = 3


def lossy_app(folder: Path) -> Path:
    """hello-numpy-sag, 3 rounds, with the trainer above (min_clients 2: every round waits for both sites; round 1
    then accepts one result only, below min_clients, and still aggregates it)."""
    app = make_app(folder, server_args={"num_rounds": ROUNDS, "min_clients": 2})
    (app / "custom" / "lossy_trainer.py").write_text(LOSSY_TRAINER)
    path = app / "config" / "config_fed_client.json"
    config = json.loads(path.read_text())
    config["executors"][0]["executor"]["path"] = "lossy_trainer.LossyTrainer"
    path.write_text(json.dumps(config))
    return app


def expected_rounds() -> list[dict[str, Any]]:
    """Per round: each accepted site's loss and their mean, weighted 1 (site-1) : 2 (site-2)."""
    rounds = []
    for rnd in range(ROUNDS):
        sites = {"site-2": {"loss": 2 / (rnd + 1)}}
        if rnd != 1:
            sites["site-1"] = {"loss": 1 / (rnd + 1)}
        rounds.append({"round": rnd, "sites": sites, "mean": {"loss": pytest.approx(MEANS[rnd])}})
    return rounds


MEANS = [(1 * 1 + 2 * 2) / 3, 1.0, (1 * 1 / 3 + 2 * 2 / 3) / 3]  # round 1: site-2 alone


def check_run_files(run_dir: Path, server_log: str) -> None:
    """metrics.jsonl, the TensorBoard files and the refusal in the server's log."""
    from fl_broker.server.metrics import read_metrics

    found = read_metrics(run_dir)
    assert found["skipped"] == 0 and found["rounds"] == expected_rounds()
    assert "round 1: refused result from site-1: metric 'loss' is nan" in server_log
    pytest.importorskip("tensorboardX")
    from tests.support.tb_events import read_scalars

    tb = run_dir / "tb_events"
    assert read_scalars(tb / "site-1") == {"loss": [(0, 1.0), (2, pytest.approx(1 / 3))]}  # no NaN point
    assert read_scalars(tb / "site-2") == {"loss": [(0, 2.0), (1, 1.0), (2, pytest.approx(2 / 3))]}
    assert read_scalars(tb / "server") == {"loss": [(r, pytest.approx(mean)) for r, mean in enumerate(MEANS)]}


def test_metrics_in_one_process(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="fl_broker")
    result = simulate(lossy_app(tmp_path), clients=2, workspace_root=tmp_path / "ws", make_worker=_make_worker)
    assert result.phase == "finished"
    assert result.status["metrics"]["round"] == ROUNDS - 1
    assert result.status["metrics"]["sites"] == {"site-1": {"loss": 1 / 3}, "site-2": {"loss": 2 / 3}}
    check_run_files(tmp_path / "ws" / "server" / "run_1", caplog.text)


@pytest.mark.rabbitmq
def test_metrics_as_processes_over_rabbitmq(tmp_path: Path, rabbitmq_url: str, rabbitmq_node) -> None:
    with running_federation(tmp_path / "ws", rabbitmq_url) as federation:
        federation.start_job(lossy_app(tmp_path))
        status = federation.wait_finished()
        shown = federation.call("show_metrics", run=1)
    assert status["phase"] == "finished" and status["metrics"]["round"] == ROUNDS - 1
    assert shown["rounds"] == expected_rounds() and shown["cross_val"] is None
    check_run_files(tmp_path / "ws" / "server" / "run_1", federation.log("server"))
    assert "could not publish event" not in federation.log("server")  # the broker took every event's headers
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(rabbitmq_url).path[1:])
    check_event_headers(rabbitmq_node.get_messages(vhost, "fl.event.history", count=200))


def check_event_headers(messages: list[dict[str, Any]]) -> None:
    """What the management UI's "Get messages" shows of the events: their headers, as text and numbers."""
    by_key = {m["routing_key"]: m["properties"].get("headers") or {} for m in messages}
    done = by_key["run.1.round.0.done"]
    assert done["x-fl-event"] == "round_done" and (done["x-fl-run"], done["x-fl-round"]) == (1, 0)
    assert done["x-fl-accepted"] == 2 and done["x-fl-targets"] == 2 and float(done["x-fl-seconds"]) < 60
    assert done["x-fl-metrics"] == {"loss": "1.66667"}  # (1*1 + 2*2) / 3
    assert done["x-fl-summary"].startswith("run 1 round 0: round_done; accepted=2; targets=2; seconds=")
    assert done["x-fl-summary"].endswith("; metrics={loss=1.66667}")
    assert by_key["run.1.round.1.done"]["x-fl-accepted"] == 1  # site-1's NaN loss was refused
    started = by_key["run.1.round.2.started"]
    assert started["x-fl-targets"] == "site-1, site-2" and started["x-fl-num-rounds"] == ROUNDS
    assert by_key["run.1.round.2.training_finished"]["x-fl-summary"] == "run 1 round 2: training_finished; num_rounds=3"
    assert all("x-fl-site-metrics" not in h for h in by_key.values())  # a dict of dicts stays in the body
