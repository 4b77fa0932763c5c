"""The writer thread of a run's metrics files: records written in order and all of them by close(), the
round never waiting for the disk, TensorBoard flushed on a timer rather than at every round's end."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

from fl_broker.fl.events import Event, EventType
from fl_broker.server.metrics import MetricsRecorder
from fl_broker.server.metrics_files import MetricsFiles


class FakeBoard:
    """Stands in for TensorBoardFiles: counts what it is asked to do; `gate` (if set) holds every write."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.scalars_written: list[tuple[str, int]] = []
        self.flushes = 0
        self.closed = False

    def scalars(self, origin: str, metrics: dict[str, float], step: int, *, prefix: str = "") -> None:
        if self.gate is not None:
            self.gate.wait(10)
        self.scalars_written.append((origin, step))

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


def round_record(rnd: int, **metrics: Any) -> dict[str, Any]:
    return {"kind": "round", "run": 1, "round": rnd, "metrics": metrics or {"loss": 1.0 / (rnd + 1)}}


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_record_is_written_in_order_by_the_time_close_returns(tmp_path: Path) -> None:
    board = FakeBoard()
    files = MetricsFiles(tmp_path / "metrics.jsonl", board)  # type: ignore[arg-type]
    for rnd in range(500):
        files.write(round_record(rnd))
    files.close()
    assert [line["round"] for line in read_lines(tmp_path / "metrics.jsonl")] == list(range(500))
    assert board.scalars_written == [("server", rnd) for rnd in range(500)]
    assert board.closed


def test_a_round_does_not_wait_for_the_files(tmp_path: Path) -> None:
    gate = threading.Event()  # the disk is stuck until this is set
    board = FakeBoard(gate)
    recorder = MetricsRecorder(tmp_path, tensorboard=False)
    recorder._files = MetricsFiles(recorder.path, board)  # type: ignore[arg-type]
    done = Event(EventType.ROUND_DONE, run=1, round=0, data={"metrics": {"loss": 0.5}, "site_metrics": {}})
    started = time.monotonic()
    for _ in range(20):
        recorder(done)
    assert time.monotonic() - started < 1.0  # the writes wait for the gate; the hook does not
    assert recorder.latest == {"round": 0, "sites": {}, "mean": {"loss": 0.5}}  # check_status sees it at once
    gate.set()
    recorder.close()
    assert len(read_lines(tmp_path / "metrics.jsonl")) == 20 and len(board.scalars_written) == 20


def test_tensorboard_is_flushed_on_a_timer_not_at_every_round(tmp_path: Path) -> None:
    board = FakeBoard()
    files = MetricsFiles(tmp_path / "metrics.jsonl", board, tb_flush_seconds=3600)  # type: ignore[arg-type]
    for rnd in range(50):
        files.write(round_record(rnd))
    deadline = time.monotonic() + 10
    while len(board.scalars_written) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(board.scalars_written) == 50 and board.flushes == 0  # 50 rounds, no fsync of the event files
    files.close()
    assert board.closed  # closing the writers flushes them

    board = FakeBoard()
    files = MetricsFiles(tmp_path / "other.jsonl", board, tb_flush_seconds=0.1)  # type: ignore[arg-type]
    files.write(round_record(0))
    deadline = time.monotonic() + 10
    while board.flushes == 0 and time.monotonic() < deadline:  # nothing else is written: the timer flushes
        time.sleep(0.01)
    assert board.flushes == 1
    time.sleep(0.3)
    assert board.flushes == 1  # nothing new since: no second flush
    files.close()


def test_a_record_that_cannot_be_written_is_left_out_with_one_warning(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    files = MetricsFiles(tmp_path / "metrics.jsonl", None)
    files.write(round_record(0))
    files.write(round_record(1, loss=math.nan))  # JSON has no NaN
    files.write(round_record(2, loss=math.inf))
    files.write(round_record(3))
    files.close()
    assert [line["round"] for line in read_lines(tmp_path / "metrics.jsonl")] == [0, 3]
    assert sum("could not record metrics in" in r.getMessage() for r in caplog.records) == 1
