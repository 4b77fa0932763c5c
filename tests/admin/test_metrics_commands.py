"""Metrics in the admin console, end to end through `fl-broker admin -c` on an in-process federation running
hello-numpy-cross-val: check_status shows the latest round's metrics, show_metrics every round's and the
cross-site evaluation as a model x site table per metric; bad arguments get the usage line."""

from __future__ import annotations

import re
import shutil

from admin.watch import RunView, WatchScreen
from fl_broker.protocol.events import EventMessage
from tests.admin.conftest import Federation, run_admin
from tests.support.inprocess import ROOT

CROSS_VAL_APP = ROOT / "apps" / "hello-numpy-cross-val"
FLOW = "upload_app hello-numpy-cross-val; set_run_number 1; deploy_app hello-numpy-cross-val all; start_app all"


def finished_cross_val_run(fed: Federation) -> None:
    shutil.copytree(CROSS_VAL_APP, fed.root / "admin" / "transfer" / CROSS_VAL_APP.name)
    assert run_admin(fed.url, fed.root, FLOW).code == 0
    fed.wait_stopped()


def test_check_status_and_show_metrics_as_json(fed: Federation) -> None:
    finished_cross_val_run(fed)
    status, shown = run_admin(fed.url, fed.root, "check_status server; show_metrics", json_mode=True).objects()
    # hello-numpy's trainer reports the mean of the weights it sends (5 + round + 1) and its update's norm (3)
    both = {"weight_mean": 8.0, "update_norm": 3.0}
    assert status["metrics"] == {
        "round": 2,
        "sites": {"site-1": both, "site-2": both},
        "mean": {"update_norm": 3.0, "weight_mean": 8.0},
    }
    assert shown["run"] == 1 and shown["skipped_lines"] == 0
    assert shown["file"] == str(fed.root / "server" / "run_1" / "metrics.jsonl")
    assert [(r["round"], r["sites"]["site-1"]["weight_mean"], r["mean"]["weight_mean"]) for r in shown["rounds"]] == [
        (0, 6.0, 6.0),
        (1, 7.0, 7.0),
        (2, 8.0, 8.0),
    ]
    assert shown["cross_val_file"].endswith("run_1/cross_site_val/cross_val_results.json")
    models = {"SRV_global_model", "site-1", "site-2"}
    assert set(shown["cross_val"]) == {"site-1", "site-2"} and set(shown["cross_val"]["site-2"]) == models
    assert shown["cross_val"]["site-2"]["site-1"] == {"weight_mean": 8.0, "mean_abs_error": 12.0}


def test_show_metrics_for_people(fed: Federation) -> None:
    finished_cross_val_run(fed)
    out = run_admin(fed.url, fed.root, "check_status server; show_metrics 1").text
    assert "Metrics of round 2" in out and "Metrics of run 1, per round" in out
    assert re.search(r"│ 2\s+│ \(mean\)\s+│\s+8 │\s+3 │", out)  # round 2's weighted mean row
    assert re.search(r"│ 0\s+│ site-1\s+│\s+6 │\s+3 │", out)
    assert "mean_abs_error: model x data site" in out and "weight_mean: model x data site" in out
    # one row per model (the global one first), one column per site where it was validated
    matrix = out[out.index("mean_abs_error: model x data site") : out.index("weight_mean: model x data site")]
    rows = re.findall(r"│ (SRV_global_model|site-\d)\s+│\s+([\d.]+) │\s+([\d.]+) │", matrix)
    assert rows == [("SRV_global_model", "2.66667", "12"), ("site-1", "2.66667", "12"), ("site-2", "2.66667", "12")]


def test_show_metrics_bad_arguments_and_missing_runs(fed: Federation) -> None:
    lines = "show_metrics; show_metrics zero; show_metrics 1 2; set_run_number 2; show_metrics; show_metrics 9"
    no_run, zero, two, _, empty, nine = run_admin(fed.url, fed.root, lines, json_mode=True).objects()
    assert no_run["error"] == "no run number is set: name the run (show_metrics RUN)"
    assert zero["error"] == "run number must be an integer >= 1, got 'zero'; usage: show_metrics [RUN]"
    assert two["error"] == "usage: show_metrics [RUN]"
    assert empty["ok"] and empty["rounds"] == [] and empty["cross_val"] is None
    assert nine["error"].startswith("run 9 does not exist on the server")
    people = run_admin(fed.url, fed.root, "show_metrics 2").text
    assert "run 2 has no metrics yet" in people


def test_watch_shows_each_sites_metrics_and_the_rounds_mean() -> None:
    view = RunView(sites={"site-1": "-", "site-2": "-"})
    for event in (
        EventMessage(1, "round_started", 4, {"targets": ["site-1", "site-2"]}),
        EventMessage(1, "after_contribution_accept", 4, {"site": "site-1", "accepted": True, "metrics": {"loss": 0.5}}),
        EventMessage(1, "round_done", 4, {"metrics": {"loss": 0.4375}}),
    ):
        view.apply_event(event)
    assert view.site_metrics == {"site-1": {"loss": 0.5}} and view.mean == (4, {"loss": 0.4375})
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(WatchScreen().draw(view))
    screen = console.export_text()
    assert re.search(r"site-1\s+│ result accepted\s+│ loss=0.5", screen)
    assert re.search(r"site-2\s+│ training round 4\s+│ -", screen)
    assert "round 4 mean: loss=0.4375" in screen
