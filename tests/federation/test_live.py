"""The live view of `simulate` and `poc`: numbers from the fl.event stream, shown only for runs that last."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from fl_broker.cli import _make_worker
from fl_broker.cli.live import PIPE_LINE_EVERY, SHOW_AFTER, LiveView, RoundStats
from fl_broker.cli.simulate import simulate
from fl_broker.protocol.events import EventMessage
from tests.support.federation import make_app
from tests.support.inprocess import APP


def event(kind: str, rnd: int | None = None, at: float = 0.0, **data: object) -> EventMessage:
    return EventMessage(run=3, type=kind, round=rnd, data=data, time=at)


def test_rounds_are_timed_on_the_server_clock_and_results_counted_per_round() -> None:
    stats = RoundStats(run=3)
    stream = [
        event("training_started", num_rounds=4, start_round=0),
        event("round_started", 0, 100.0, num_rounds=4, targets=["site-1", "site-2"]),
        event("after_contribution_accept", 0, site="site-1", accepted=True),
        event("after_contribution_accept", 0, site="site-2", accepted=False),
        event("round_done", 0, 100.5, metrics={"loss": 0.123456, "accuracy": 0.5}),
        event("round_started", 1, 100.5, num_rounds=4, targets=["site-1", "site-2"]),
        event("after_contribution_accept", 1, site="site-2", accepted=True),
    ]
    for fields in stream:
        stats.apply_event(fields, received=999.0)  # the receive time is only a fallback
    assert stats.line() == (
        "run 3 | round 1 (1/4 done) | 0.50 s/round | 1/2 results accepted (2 in all) | mean loss=0.1235 accuracy=0.5"
    )
    assert stats.line(finished_round=True) == (
        "run 3 | round 0 done (1/4) | 0.50 s/round | 1/2 results accepted (2 in all) | mean loss=0.1235 accuracy=0.5"
    )
    stats.apply_event(event("round_done", 1, 101.5), received=0.0)
    stats.apply_event(event("training_finished", 1, num_rounds=4), received=0.0)
    assert stats.seconds_per_round == 0.75 and stats.rounds_done == 2
    assert stats.line() == "run 3 | finished (2/4 done) | 0.75 s/round | 1/2 results accepted (2 in all)"


def test_a_missed_event_is_made_up_by_check_status() -> None:
    stats = RoundStats(run=1)
    stats.apply_status({"phase": "finished", "num_rounds": 10, "rounds_done": 10})
    assert stats.line() == "run 1 | finished (10/10 done) | - s/round | no results yet (0 in all)"


def run_simulate(tmp_path: Path, app: Path, console: Console, **view: float) -> float:
    """Simulate `app` as run 1 with a live view on `console`; the seconds the run took."""
    live = LiveView(console, run=1, **view)
    result = simulate(app, clients=2, workspace_root=tmp_path / "ws", make_worker=_make_worker, run=1, live=live)
    assert result.phase == "finished"
    return result.seconds


def test_a_run_that_lasts_shows_one_line_per_round_in_a_pipe(tmp_path: Path) -> None:
    app = make_app(tmp_path, server_args={"num_rounds": 6}, client_args={"sleep_time": 0.3})
    out = io.StringIO()
    seconds = run_simulate(tmp_path, app, Console(file=out, width=80, force_terminal=False))
    lines = out.getvalue().splitlines()
    assert lines, "a 2 s run showed nothing"
    for line in lines:  # never wrapped, whatever the width
        assert re.fullmatch(
            r"run 1 \| round \d done \(\d/6\) \| 0\.\d\d s/round \| 2/2 results accepted \(\d+ in all\)"
            r" \| mean weight_mean=\d+ update_norm=3",
            line,
        )
    assert lines[-1].startswith("run 1 | round 5 done (6/6)")
    assert lines[-1].endswith("(12 in all) | mean weight_mean=11 update_norm=3")  # 5 + round 5 + 1
    assert len(lines) <= seconds / PIPE_LINE_EVERY + 1  # at most one a second, plus the last round


def test_a_run_that_lasts_is_redrawn_in_place_in_a_terminal(tmp_path: Path) -> None:
    app = make_app(tmp_path, server_args={"num_rounds": 5}, client_args={"sleep_time": 0.3})
    out = io.StringIO()
    run_simulate(tmp_path, app, Console(file=out, width=120, force_terminal=True))
    screen = out.getvalue()
    assert "\x1b[" in screen and "run 1 | round" in screen  # cursor moves: one line drawn over and over
    pattern = r"run 1 \| finished \(5/5 done\) \| 0\.\d\d s/round \| 2/2 results accepted \(10 in all\)"
    pattern += r" \| mean weight_mean=10 update_norm=3"
    assert re.search(pattern, screen)


def test_a_quick_run_shows_no_live_view(tmp_path: Path) -> None:
    assert LiveView(Console(), run=1).show_after == SHOW_AFTER == 1.0
    out = io.StringIO()
    for terminal in (False, True):  # hello-numpy-sag takes ~0.2 s; 5 s keeps a loaded machine from mattering
        run_simulate(tmp_path / str(terminal), APP, Console(file=out, width=120, force_terminal=terminal), show_after=5)
    assert out.getvalue() == ""
