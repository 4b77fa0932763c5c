"""hello-numpy-sag end to end in one process on the in-process transport (`fl-broker simulate`)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fl_broker.cli import _make_worker, main
from fl_broker.cli.simulate import simulate
from tests.support.federation import broken_app, refusing_app
from tests.support.processes import HELLO_INITIAL as INITIAL
from tests.support.processes import assert_hello_run_finished

APP = Path(__file__).resolve().parents[2] / "apps" / "hello-numpy-sag"


def test_simulate_produces_the_exact_weights_and_the_flare_layout(tmp_path):
    rounds_seen: list[int] = []

    def on_status(status):
        rounds_seen.append(status["rounds_done"])

    result = simulate(APP, clients=2, workspace_root=tmp_path, make_worker=_make_worker, on_status=on_status)
    assert result.phase == "finished" and result.run == 1
    assert_hello_run_finished(tmp_path)
    assert rounds_seen == sorted(rounds_seen) and rounds_seen[-1] == 10


def test_simulate_command_prints_the_final_model_and_uses_a_new_run(tmp_path, capsys):
    assert main(["simulate", str(APP), "--clients", "2", "--workspace", str(tmp_path)]) == 0
    assert main(["simulate", str(APP), "--clients", "2", "--workspace", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "run 1: finished" in out and "run 2: finished" in out
    assert re.search(r"\[\[11\. 12\. 13\.\]\s+\[14\. 15\. 16\.\]\s+\[17\. 18\. 19\.\]\]", out)
    np.testing.assert_array_equal(np.load(tmp_path / "server" / "run_2" / "models" / "server.npy"), INITIAL + 10)


def test_simulate_writes_one_log_per_participant(tmp_path):
    assert main(["simulate", str(APP), "--clients", "2", "--workspace", str(tmp_path)]) == 0
    server = (tmp_path / "server" / "log.txt").read_text()
    assert "run 1 ended: finished" in server and "site-1 registered" in server
    assert "workers.worker" not in server and "new weights" not in server
    for site, other in (("site-1", "site-2"), ("site-2", "site-1")):
        text = (tmp_path / site / "log.txt").read_text()
        assert f"{site} registered with the server" in text
        assert len(re.findall(r"numpy_components: round \d: new weights", text)) == 10
        assert other not in text and "fl_broker.server" not in text


def test_simulate_of_a_broken_app_is_one_line_not_a_traceback(tmp_path, capsys):
    app = broken_app(tmp_path)
    assert main(["simulate", str(app), "--clients", "2", "--workspace", str(tmp_path / "ws")]) == 1
    captured = capsys.readouterr()
    (line,) = captured.out.splitlines()
    assert line.startswith("simulate failed: start_app failed: ConfigError: config_fed_server.json: components[0]")
    assert line.endswith("np_model_persistor.py failed: RuntimeError('broken on purpose')")
    assert "Traceback" not in captured.out + captured.err


def test_a_run_whose_rounds_accepted_nothing_fails_and_simulate_says_why(tmp_path, capsys):
    app = refusing_app(tmp_path / "refusing")
    assert main(["simulate", str(app), "--clients", "2", "--workspace", str(tmp_path / "ws")]) == 1
    captured = capsys.readouterr()
    reason = (
        "round 0: 0 of 2 results accepted: site-1 return code BAD_TASK_DATA; site-2 return code BAD_TASK_DATA"
        " (and 1 more rounds like it)"
    )
    (line,) = [line for line in captured.out.splitlines() if line.startswith("run 1:")]
    assert re.fullmatch(rf"run 1: failed in [\d.]+ s: {re.escape(reason)}", line)
    assert "Traceback" not in captured.out + captured.err
    assert f"run 1 failed: {reason}" in (tmp_path / "ws" / "server" / "log.txt").read_text()


def test_check_status_shows_why_the_run_failed(tmp_path):
    app = refusing_app(tmp_path / "refusing", num_rounds=1)
    result = simulate(app, clients=2, workspace_root=tmp_path / "ws", make_worker=_make_worker)
    assert result.phase == "failed"
    assert result.status["failure"] == (
        "round 0: 0 of 2 results accepted: site-1 return code BAD_TASK_DATA; site-2 return code BAD_TASK_DATA"
    )
    assert not (tmp_path / "ws" / "server" / "run_1" / "models" / "checkpoint.msgpack").exists()
