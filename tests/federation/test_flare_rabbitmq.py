"""The FLARE 2.0 style app (tests/flare_apps/hello-flare) run unchanged by real processes over the RabbitMQ node
the suite starts: a whole run, and a run whose server is killed mid-run and resumes."""

from __future__ import annotations

import pytest

from tests.federation.flare_app import assert_exact_results, copy_app, formatter_line, fresh_run_events, run_events
from tests.support.federation import ProcessFederation

pytestmark = pytest.mark.rabbitmq


def test_a_flare_app_runs_unchanged_over_rabbitmq(tmp_path, rabbitmq_url):
    fed = ProcessFederation(tmp_path / "ws", rabbitmq_url, client_grace=3.0)
    try:
        fed.start_server()
        fed.start_workers()
        fed.start_job(copy_app(tmp_path))
        assert fed.wait_finished()["phase"] == "finished"
        run_dir = fed.workspace / "server" / "run_1"
        assert_exact_results(run_dir)
        assert run_events(run_dir) == fresh_run_events(3)
        assert formatter_line() in fed.log("server")
        assert "site-2 trains round 2" in fed.log("site-2")
    finally:
        fed.close()


def test_a_flare_run_resumed_after_a_server_kill_reads_its_saved_model(tmp_path, rabbitmq_url):
    fed = ProcessFederation(tmp_path / "ws", rabbitmq_url, client_grace=3.0)
    try:
        fed.start_server_killed_before("checkpoint.msgpack:2")  # round 0 committed, round 1 not yet
        fed.start_workers()
        fed.start_job(copy_app(tmp_path))
        assert fed.wait_exit("server") == 137
        fed.start_server()
        assert fed.wait_finished()["phase"] == "finished"
        run_dir = fed.workspace / "server" / "run_1"
        assert_exact_results(run_dir)
        events = run_events(run_dir)
        first = events.index("_start_run round=None", 1)  # where the restarted server's run begins
        assert events[:4] == fresh_run_events(3)[:4]
        assert events[first : first + 3] == [
            "_start_run round=None",
            "load start_round=1 saved",
            "save meta={'source': 'saved'}",
        ]
        assert events[-3:] == ["_round_done round=2", "_cross_val_init round=None", "_end_run round=None"]
        assert "resuming run 1 at round 1" in fed.log("server")
    finally:
        fed.close()
