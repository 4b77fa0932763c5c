"""A run's metrics on the server: an event hook that records what the sites reported, and the reader of that
record.

`run_N/metrics.jsonl` holds one JSON object a line, appended as events arrive (a resumed run appends to
it; a round done twice is recorded twice, and the later lines count):

    {"kind": "site", "run": 1, "round": 0, "site": "site-1", "metrics": {...}, "weight": 1.0, "time": ...}
    {"kind": "round", "run": 1, "round": 0, "metrics": {...}, "sites": 2, "accepted": 2, "seconds": 0.01, ...}
    {"kind": "validation", "run": 1, "model": "SRV_global_model", "site": "site-1", "metrics": {...}, ...}

"site": the metrics of one site's accepted result and its weight; "round": their weighted mean at the end of
the round; "validation": one cell of cross-site evaluation. The same numbers go to TensorBoard files under
`run_N/tb_events/` when tensorboardX is installed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from fl_broker.fl.events import Event, EventType
from fl_broker.server.metrics_files import MetricsFiles
from fl_broker.server.tensorboard import TensorBoardFiles

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TB_EVENTS_DIR = "tb_events"
MAX_READ_BYTES = 64 * 1024 * 1024  # what show_metrics reads of a file at most (its newest part)


def to_record(event: Event) -> dict[str, Any] | None:
    """The metrics.jsonl line an event makes, or None for an event without metrics."""
    data = event.data
    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        return None
    base = {"run": event.run, "time": round(time.time(), 3)}
    if event.type == EventType.AFTER_CONTRIBUTION_ACCEPT:
        weight = data.get("metrics_weight", 1.0)
        return {
            "kind": "site",
            **base,
            "round": event.round,
            "site": data.get("site"),
            "metrics": metrics,
            "weight": weight,
        }
    if event.type == EventType.ROUND_DONE:
        site_metrics = data.get("site_metrics") or {}
        extra: dict[str, Any] = {k: data[k] for k in ("accepted", "targets", "seconds") if k in data}
        return {"kind": "round", **base, "round": event.round, "metrics": metrics, "sites": len(site_metrics), **extra}
    if event.type == EventType.VALIDATION_RESULT_RECEIVED:
        return {
            "kind": "validation",
            **base,
            "model": data.get("model_owner"),
            "site": data.get("data_client"),
            "metrics": metrics,
        }
    return None


class MetricsRecorder:
    """The event hook of one run that keeps the latest round's metrics for check_status and hands each record
    to the run's metrics files (metrics_files.py: metrics.jsonl and TensorBoard files if it can, written on a
    thread of their own). Disk errors are logged, never raised."""

    def __init__(self, run_dir: Path, *, tensorboard: bool = True) -> None:
        self.path = run_dir / METRICS_FILE
        files = TensorBoardFiles.open(run_dir / TB_EVENTS_DIR) if tensorboard else None
        self._files = MetricsFiles(self.path, files)
        self._lock = threading.Lock()
        self._latest: dict[str, Any] | None = None

    def __call__(self, event: Event) -> None:
        record = to_record(event)
        if record is None:
            return
        self._files.write(record)
        with self._lock:
            self._latest = _latest_after(self._latest, record)

    @property
    def latest(self) -> dict[str, Any] | None:
        """The metrics of the latest round that has any: {round, sites: {site: metrics}, mean (once the round
        is done)}; None before any."""
        with self._lock:
            return None if self._latest is None else json.loads(json.dumps(self._latest))

    def close(self) -> None:
        """Write every record handed so far and close the files (the run ended)."""
        self._files.close()


def _latest_after(latest: dict[str, Any] | None, record: dict[str, Any]) -> dict[str, Any] | None:
    """What check_status shows after `record`: the round it belongs to, with each site's metrics and the mean."""
    if record["kind"] == "validation":
        return latest
    rnd = record["round"]
    if latest is None or latest["round"] != rnd:
        latest = {"round": rnd, "sites": {}, "mean": None}
    if record["kind"] == "site":
        latest["sites"][str(record["site"])] = record["metrics"]
    else:
        latest["mean"] = record["metrics"]
    return latest


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """What `run_dir`'s metrics.jsonl says, for show_metrics: {rounds: [{round, sites: {site: metrics},
    mean}], validation: {site: {model: metrics}}, skipped: lines that were not records}. The later of two
    records of the same round and site counts (a round done again after a restart)."""
    rounds: dict[int, dict[str, Any]] = {}
    validation: dict[str, dict[str, Any]] = {}
    skipped = 0
    for line in _tail_lines(run_dir / METRICS_FILE):
        record = _parse(line)
        if record is None:
            skipped += 1
        elif record["kind"] == "validation":
            validation.setdefault(str(record.get("site")), {})[str(record.get("model"))] = record["metrics"]
        else:
            row = rounds.setdefault(record["round"], {"round": record["round"], "sites": {}, "mean": None})
            if record["kind"] == "site":
                row["sites"][str(record.get("site"))] = record["metrics"]
            else:
                row["mean"] = record["metrics"]
    return {"rounds": [rounds[r] for r in sorted(rounds)], "validation": validation, "skipped": skipped}


def _tail_lines(path: Path) -> list[str]:
    """The lines of `path` (its last MAX_READ_BYTES: a partial first line is dropped); none if it is missing."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, 2)
            file.seek(max(0, size - MAX_READ_BYTES))
            data = file.read()
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[1:] if size > MAX_READ_BYTES else lines


def _parse(line: str) -> dict[str, Any] | None:
    """A record of a line, or None if it is not one (a torn last line after a kill, a hand edit)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        return None
    kind = record.get("kind")
    if kind in ("site", "round") and isinstance(record.get("round"), int):
        return record
    return record if kind == "validation" else None
