"""bench/compare's parts: the /proc memory watch, the round arithmetic, the weight check, the ratios, the
table, and the command line's refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from bench.compare import __main__ as cli
from bench.compare.memwatch import MemoryWatch, descendants
from bench.compare.model import check_final, initial_weights, train
from bench.compare.report import memory_ratio, outcome_line, rss_text, table, time_ratio
from bench.compare.rows import (
    FAILED,
    OK,
    ROWS,
    SKIPPED,
    TIMEOUT,
    WRONG_WEIGHTS,
    Outcome,
    Row,
    judge,
    seconds_per_round,
)

# A process that holds `MIB` MiB of touched memory in a child of its own, then waits to be killed.
MIB = 200
CHILD = (
    f"import time; b = bytearray({MIB} << 20); b[::4096] = b'x' * ({MIB} << 8); print('ready', flush=True); "
    "time.sleep(60)"
)
HOLDER = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {CHILD!r}]); time.sleep(60)"


def test_memory_watch_sums_the_pss_of_a_tree_and_its_peak() -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        watch = MemoryWatch(lambda: [proc.pid], min_free_mib=0)
        total = watch.sample()
        assert MIB <= total < MIB + 100, "the child's memory is counted once, under its parent"
        assert watch.peak_mib == total and sum(watch.peak_processes.values()) == 2
        assert not watch.tripped.is_set()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_memory_watch_finds_marked_processes_outside_the_tree() -> None:
    marker = f"FL_COMPARE_TAG={uuid.uuid4().hex}"
    env = dict(os.environ, FL_COMPARE_TAG=marker.split("=", 1)[1])
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env, start_new_session=True)
    try:
        watch = MemoryWatch(list, marker=marker, min_free_mib=0)
        assert watch.pids() == {proc.pid}
        assert MemoryWatch(list, min_free_mib=0).pids() == set()
    finally:
        proc.kill()
        proc.wait()


def test_memory_watch_trips_under_the_free_memory_floor() -> None:
    watch = MemoryWatch(list, min_free_mib=10**9)
    watch.sample()
    assert watch.tripped.is_set()


def test_descendants_follow_the_tree_and_skip_dead_roots() -> None:
    tree = {1: 0, 10: 1, 11: 10, 12: 10, 20: 1, 30: 99}
    assert descendants([10], tree) == {10, 11, 12}
    assert descendants([10, 30, 404], tree) == {10, 11, 12, 30}


def test_seconds_per_round_is_from_the_second_start_to_the_last_end() -> None:
    assert seconds_per_round([0.0, 5.0, 6.0, 7.0], [4.0, 5.5, 6.5, 8.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 rounds"):
        seconds_per_round([0.0], [1.0])


def test_check_final_accepts_initial_plus_rounds_only() -> None:
    weights = initial_weights(9)
    for _ in range(10):
        weights = train(weights)
    assert check_final(weights, 9, 10) is None
    assert weights.tolist() == [[11, 12, 13], [14, 15, 16], [17, 18, 19]]
    assert check_final(weights, 9, 9) == "9 of 9 final weights differ from initial + 9"
    assert "float64" in (check_final(weights.astype(np.float64), 9, 10) or "")
    one_off = np.full(1000, 3, dtype=np.float32)
    one_off[7] = 2
    assert check_final(one_off, 1000, 3) == "1 of 1000 final weights differ from initial + 3"


def test_judge_needs_every_round_timed() -> None:
    row = Row("3x3-2", 9, 2, 3, 10)
    good = initial_weights(9) + np.float32(3)
    assert judge("x", row, [0, 1, 2], [0.5, 1.5, 2.5], good).status == OK
    assert judge("x", row, [0, 1, 2], [0.5, 1.5, 2.5], good - 1).status == WRONG_WEIGHTS
    short = judge("x", row, [0, 1], [0.5, 1.5], good)
    assert short.status == FAILED and "2 round starts and 2 ends of 3" in short.detail


def test_ratios_compare_with_the_best_peer_that_ran_correctly() -> None:
    outcomes = [
        Outcome("fl-broker", "r", OK, seconds_per_round=2.0, peak_pss_mib=300),
        Outcome("flower-sim", "r", OK, seconds_per_round=4.0, peak_pss_mib=1000),
        Outcome("flower-grpc", "r", WRONG_WEIGHTS, seconds_per_round=0.1, peak_pss_mib=100),
    ]
    assert (time_ratio(outcomes).value, time_ratio(outcomes).peer) == (0.5, "flower-sim")
    assert memory_ratio(outcomes).value == pytest.approx(0.3)
    outcomes[0].status = TIMEOUT
    assert time_ratio(outcomes).value is None and time_ratio(outcomes).text() == "-"


def test_table_shows_numbers_and_the_status_of_runs_without_one() -> None:
    row = Row("50M-8", 50_000_000, 8, 3, 10)
    outcomes = [
        Outcome("fl-broker", "50M-8", TIMEOUT, peak_pss_mib=9.4 * 1024),
        Outcome("flower-sim", "50M-8", OK, seconds_per_round=7.75, peak_pss_mib=11.2 * 1024),
    ]
    text = table([row], outcomes)
    assert "| 50M x 8 clients, 3 rounds | timeout (9.40 GiB) | 7.7500 (11.20 GiB) | - |" in text
    assert "Flower legacy gRPC" not in text  # a system that was not run gets no column


def test_quick_rows_are_the_small_ones_and_rounds_can_be_changed() -> None:
    quick = cli.choose_rows(cli.parse_args(["--quick"]))
    assert [r.name for r in quick] == ["3x3-2", "3x3-8"]
    assert len(cli.choose_rows(cli.parse_args([]))) == len(ROWS)
    picked = cli.choose_rows(cli.parse_args(["--rows", "50M-2", "--rounds", "4", "--timeout", "9"]))
    assert [(r.size, r.clients, r.rounds, r.timeout) for r in picked] == [(50_000_000, 2, 4, 9)]


def test_scale_rows_are_chosen_apart_and_run_fl_broker_only(tmp_path: Path) -> None:
    scale = cli.choose_rows(cli.parse_args(["--scale"]))
    assert [(r.name, r.size, r.clients) for r in scale] == [("10M-32", 10_000_000, 32), ("50M-16", 50_000_000, 16)]
    assert not any(r.name in ("10M-32", "50M-16") for r in cli.choose_rows(cli.parse_args([])))
    (row,) = cli.choose_rows(cli.parse_args(["--rows", "10M-32", "--rounds", "2"]))
    assert (row.rounds, row.runs("fl-broker"), row.runs("flower-sim")) == (2, True, False)
    skipped = cli.run_one("flower-sim", row, tmp_path / "w", cli.parse_args([]), None)
    assert skipped.status == SKIPPED and "fl-broker only" in skipped.detail
    assert not (tmp_path / "w").exists()  # nothing was started for it
    ran = Outcome("fl-broker", "10M-32", OK, seconds_per_round=2.0, peak_pss_mib=4096)
    assert "flower" not in table([row], [ran, skipped]).splitlines()[0].lower()  # no column for a skipped peer


def test_rss_line_says_whether_the_largest_worker_is_within_the_target() -> None:
    size = 50_000_000  # 190.7 MiB of float32
    lean = Outcome("fl-broker", "50M-16", OK, server_peak_rss_mib=500.0, worker_peak_rss_mib=470.0)
    assert rss_text(lean, size) == (
        "peak RSS: server 500 MiB, largest worker 470 MiB = 2.46x the 191 MiB model (within 2.5x)"
    )
    fat = Outcome("fl-broker", "50M-16", OK, server_peak_rss_mib=500.0, worker_peak_rss_mib=480.0)
    assert "= 2.52x the 191 MiB model (OVER 2.5x)" in rss_text(fat, size)
    assert "largest worker 480 MiB" in outcome_line(fat, size)
    assert "peak RSS" not in outcome_line(Outcome("flower-sim", "50M-16", OK), size)


def test_rss_line_gives_no_ratio_for_a_model_smaller_than_the_interpreter() -> None:
    tiny = Outcome("fl-broker", "3x3-2", OK, server_peak_rss_mib=52.0, worker_peak_rss_mib=49.0)
    assert rss_text(tiny, 9) == "peak RSS: server 52 MiB, largest worker 49 MiB"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rows", "3x3-2,7M-3"], "unknown row '7M-3'; choose from 3x3-2"),
        (["--systems", "flower"], "unknown system 'flower'; choose from fl-broker"),
        (["--quick", "--rounds", "1"], "--rounds must be at least 2"),
    ],
)
def test_bad_choices_get_one_line_and_exit_code_2(argv: list[str], message: str, capsys, tmp_path: Path) -> None:
    assert cli.main([*argv, "--json", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("compare: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()
