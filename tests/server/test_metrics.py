"""The server's record of a run's metrics: run_N/metrics.jsonl, the TensorBoard files under run_N/tb_events/
(read back), the latest round for check_status, and a server that goes on without tensorboardX or a disk."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from fl_broker.fl.events import Event, EventType
from fl_broker.server import tensorboard
from fl_broker.server.metrics import METRICS_FILE, TB_EVENTS_DIR, MetricsRecorder, read_metrics


def site_result(rnd: int, site: str, weight: float = 1.0, **metrics: float) -> Event:
    data = {"site": site, "accepted": True, "metrics": metrics, "metrics_weight": weight}
    return Event(EventType.AFTER_CONTRIBUTION_ACCEPT, run=1, round=rnd, data=data)


def round_done(rnd: int, **metrics: float) -> Event:
    data = {"accepted": 2, "targets": 2, "seconds": 0.5, "metrics": metrics, "site_metrics": {"a": {}, "b": {}}}
    return Event(EventType.ROUND_DONE, run=1, round=rnd, data=data)


def validation(model: str, site: str, **metrics: float) -> Event:
    data = {"model_owner": model, "data_client": site, "metrics": metrics}
    return Event(EventType.VALIDATION_RESULT_RECEIVED, run=1, data=data)


def two_rounds() -> list[Event]:
    return [
        Event(EventType.ROUND_STARTED, run=1, round=0, data={"targets": ["site-1", "site-2"]}),
        site_result(0, "site-1", 3.0, loss=1.0),
        Event(EventType.AFTER_CONTRIBUTION_ACCEPT, run=1, round=0, data={"site": "site-2", "accepted": True}),
        round_done(0, loss=1.0),
        site_result(1, "site-1", 3.0, loss=0.5, acc=0.75),
        site_result(1, "site-2", 1.0, loss=0.25),
        round_done(1, loss=0.4375, acc=0.75),
        validation("SRV_global_model", "site-1", acc=0.8),
        validation("site-2", "site-1", acc=0.6),
    ]


def lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]


def test_each_sites_metrics_the_rounds_mean_and_validations_are_lines_of_metrics_jsonl(tmp_path: Path) -> None:
    recorder = MetricsRecorder(tmp_path, tensorboard=False)
    for event in two_rounds():
        recorder(event)
    recorder.close()
    got = lines(tmp_path)
    assert [{k: v for k, v in line.items() if k != "time"} for line in got] == [
        {"kind": "site", "run": 1, "round": 0, "site": "site-1", "metrics": {"loss": 1.0}, "weight": 3.0},
        {"kind": "round", "run": 1, "round": 0, "metrics": {"loss": 1.0}, "sites": 2, "accepted": 2}
        | {"targets": 2, "seconds": 0.5},
        {"kind": "site", "run": 1, "round": 1, "site": "site-1", "metrics": {"loss": 0.5, "acc": 0.75}, "weight": 3.0},
        {"kind": "site", "run": 1, "round": 1, "site": "site-2", "metrics": {"loss": 0.25}, "weight": 1.0},
        {"kind": "round", "run": 1, "round": 1, "metrics": {"loss": 0.4375, "acc": 0.75}, "sites": 2, "accepted": 2}
        | {"targets": 2, "seconds": 0.5},
        {"kind": "validation", "run": 1, "model": "SRV_global_model", "site": "site-1", "metrics": {"acc": 0.8}},
        {"kind": "validation", "run": 1, "model": "site-2", "site": "site-1", "metrics": {"acc": 0.6}},
    ]
    assert all(isinstance(line["time"], float) for line in got)


def test_the_latest_round_is_kept_for_check_status(tmp_path: Path) -> None:
    recorder = MetricsRecorder(tmp_path, tensorboard=False)
    assert recorder.latest is None
    events = two_rounds()
    for event in events[:2]:
        recorder(event)
    assert recorder.latest == {"round": 0, "sites": {"site-1": {"loss": 1.0}}, "mean": None}  # while it goes on
    for event in events[2:5]:
        recorder(event)
    assert recorder.latest == {"round": 1, "sites": {"site-1": {"loss": 0.5, "acc": 0.75}}, "mean": None}
    for event in events[5:]:
        recorder(event)
    assert recorder.latest == {
        "round": 1,
        "sites": {"site-1": {"loss": 0.5, "acc": 0.75}, "site-2": {"loss": 0.25}},
        "mean": {"loss": 0.4375, "acc": 0.75},
    }


def test_read_metrics_takes_the_later_record_of_a_round_done_again_and_skips_torn_lines(tmp_path: Path) -> None:
    recorder = MetricsRecorder(tmp_path, tensorboard=False)
    for event in two_rounds():
        recorder(event)
    recorder(site_result(1, "site-1", 3.0, loss=0.125))  # the server restarted and redid round 1
    recorder.close()  # every record is written once close() returns
    with (tmp_path / METRICS_FILE).open("a") as file:
        file.write('{"kind": "round", "round": 2, "metr')  # killed in the middle of a line
    found = read_metrics(tmp_path)
    assert found["skipped"] == 1
    assert found["rounds"] == [
        {"round": 0, "sites": {"site-1": {"loss": 1.0}}, "mean": {"loss": 1.0}},
        {
            "round": 1,
            "sites": {"site-1": {"loss": 0.125}, "site-2": {"loss": 0.25}},
            "mean": {"loss": 0.4375, "acc": 0.75},
        },
    ]
    assert found["validation"] == {"site-1": {"SRV_global_model": {"acc": 0.8}, "site-2": {"acc": 0.6}}}
    assert read_metrics(tmp_path / "no-such-run") == {"rounds": [], "validation": {}, "skipped": 0}


def test_tensorboard_files_hold_each_sites_curve_the_mean_and_the_validations(tmp_path: Path) -> None:
    pytest.importorskip("tensorboardX")
    from tests.support.tb_events import read_scalars

    recorder = MetricsRecorder(tmp_path)
    for event in two_rounds():
        recorder(event)
    recorder.close()
    folder = tmp_path / TB_EVENTS_DIR
    assert sorted(p.name for p in folder.iterdir()) == ["server", "site-1", "site-2"]
    assert read_scalars(folder / "site-1") == {
        "loss": [(0, 1.0), (1, 0.5)],
        "acc": [(1, 0.75)],
        "cross_val/SRV_global_model/acc": [(0, pytest.approx(0.8))],  # float32 on disk
        "cross_val/site-2/acc": [(0, pytest.approx(0.6))],
    }
    assert read_scalars(folder / "site-2") == {"loss": [(1, 0.25)]}
    assert read_scalars(folder / "server") == {"loss": [(0, 1.0), (1, 0.4375)], "acc": [(1, 0.75)]}


def test_tensorboard_files_are_written_on_the_metrics_thread_alone(tmp_path: Path) -> None:
    """No threads or pipes of tensorboardX's own per event file (they cost the server ms of CPU a round)."""
    pytest.importorskip("tensorboardX")
    import threading

    from tests.support.tb_events import read_scalars

    files = tensorboard.TensorBoardFiles.open(tmp_path)
    assert files is not None
    before = {thread.ident for thread in threading.enumerate()}
    for origin in ("site-1", "site-2", "server"):
        files.scalars(origin, {"loss": 0.5}, step=3)
    files.flush()
    assert {thread.ident for thread in threading.enumerate()} == before
    files.close()
    assert read_scalars(tmp_path / "site-2") == {"loss": [(3, 0.5)]}


def test_without_tensorboardx_the_files_are_off_said_once(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # what an environment without the extra gives
    monkeypatch.setattr(tensorboard, "_told", type(tensorboard._told)())
    caplog.set_level(logging.INFO, logger="fl_broker.server.tensorboard")
    for run in (1, 2):
        recorder = MetricsRecorder(tmp_path / f"run_{run}")
        (tmp_path / f"run_{run}").mkdir()
        for event in two_rounds():
            recorder(event)
        recorder.close()
        assert len(lines(tmp_path / f"run_{run}")) == 7  # metrics.jsonl all the same
        assert not (tmp_path / f"run_{run}" / TB_EVENTS_DIR).exists()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "TensorBoard event files are off" in said[0]
    assert "pip install 'fl-broker[metrics]'" in said[0]


class BrokenWriter:
    def __init__(self, **kwargs: object) -> None:
        pass

    def add_scalar(self, *args: object) -> None:
        raise OSError("No space left on device")

    flush = close = lambda self: None  # noqa: E731


def test_a_failing_disk_is_logged_once_and_never_stops_the_run(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(tensorboard, "summary_writer_class", lambda: BrokenWriter)
    caplog.set_level(logging.WARNING)
    missing = tmp_path / "gone" / "run_1"  # a run folder that is not there: metrics.jsonl cannot be opened
    recorder = MetricsRecorder(missing)
    for event in two_rounds():
        recorder(event)
    recorder.close()
    said = [r.getMessage() for r in caplog.records]
    assert sum("could not record metrics in" in s for s in said) == 1
    assert sum("could not write TensorBoard events" in s and "No space left" in s for s in said) == 1
    assert recorder.latest is not None and recorder.latest["round"] == 1  # check_status still has them
