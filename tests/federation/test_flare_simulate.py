"""A FLARE 2.0 style app folder (tests/flare_apps/hello-flare: custom code importing nvflare.apis and another
custom module, `name` components, a nested component, a persistor returning a ModelLearnable, a model locator
and a formatter) run unchanged by `fl-broker simulate`, fresh and resumed."""

from __future__ import annotations

from fl_broker.cli import main
from tests.federation.flare_app import (
    assert_exact_results,
    copy_app,
    formatter_line,
    fresh_run_events,
    run_events,
)


def test_a_flare_app_runs_unchanged_with_exact_results(tmp_path, capsys):
    app = copy_app(tmp_path)
    assert main(["simulate", str(app), "--clients", "2", "--workspace", str(tmp_path / "ws")]) == 0
    assert "run 1: finished" in capsys.readouterr().out
    run_dir = tmp_path / "ws" / "server" / "run_1"
    assert_exact_results(run_dir)
    assert run_events(run_dir) == fresh_run_events(3)
    assert formatter_line() in (tmp_path / "ws" / "server" / "log.txt").read_text()
    site_log = (tmp_path / "ws" / "site-1" / "log.txt").read_text()
    for r in range(3):
        assert f"INFO NPTrainer: [run=1, task=train, id=run1-train-round{r}]: site-1 trains round {r}" in site_log
    assert "INFO NPValidator: [run=1, task=validate" in site_log


def test_a_resumed_flare_run_reads_the_saved_model_once_its_start_round_is_decided(tmp_path, capsys):
    app = copy_app(tmp_path, num_rounds=2)
    workspace = ["--clients", "2", "--workspace", str(tmp_path / "ws")]
    assert main(["simulate", str(app), *workspace]) == 0
    # The run is taken up again with a third round: it resumes after the two committed ones.
    config = app / "config" / "config_fed_server.json"
    config.write_text(config.read_text().replace('"num_rounds": 2', '"num_rounds": 3'))
    assert main(["simulate", str(app), *workspace, "--run", "1"]) == 0
    assert capsys.readouterr().out.count("run 1: finished") == 2
    run_dir = tmp_path / "ws" / "server" / "run_1"
    assert_exact_results(run_dir)
    resumed = run_events(run_dir)[len(fresh_run_events(2)) :]
    assert resumed == [
        "_start_run round=None",
        "load start_round=2 saved",  # the start round was decided before the persistor was asked
        "save meta={'source': 'saved'}",  # the committed model saved again, with the meta the persistor gave
        "_initial_model_loaded round=None",
        "_round_started round=2",
        "save meta={'source': 'saved'}",
        "_round_done round=2",
        "_cross_val_init round=None",
        "_end_run round=None",
    ]
    assert "resuming run 1 at round 2" in (tmp_path / "ws" / "server" / "log.txt").read_text()
