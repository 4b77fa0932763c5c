"""show_metrics: a run's metrics per round and site (from run_N/metrics.jsonl) and its cross-site evaluation
matrix (from run_N/<cross_val_dir>/cross_val_results.json), for the admin console's tables."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fl_broker.apps.workspace import Workspace
from fl_broker.fl.cross_site_eval import RESULTS_FILE
from fl_broker.protocol.control import BadRequest, Request
from fl_broker.server.commands import requested_run
from fl_broker.server.metrics import METRICS_FILE, read_metrics
from fl_broker.server.state import EngineState

log = logging.getLogger(__name__)

MAX_CROSS_VAL_BYTES = 16 * 1024 * 1024  # a matrix of numbers; a larger file is not one this server wrote


class MetricsCommands:
    """show_metrics (args: `run`, default the current run)."""

    def __init__(self, *, workspace: Workspace, state: EngineState) -> None:
        self.workspace = workspace
        self.state = state

    def cmd_show_metrics(self, request: Request) -> dict[str, Any]:
        run = requested_run(request, self.state)
        run_dir = self.workspace.run_dir(run)
        if not run_dir.is_dir():
            raise BadRequest(f"run {run} does not exist on the server ({run_dir})")
        found = read_metrics(run_dir)
        cross_val_file = find_cross_val(run_dir)
        cross_val = read_cross_val(cross_val_file) if cross_val_file else None
        return {
            "run": run,
            "file": str(run_dir / METRICS_FILE),
            "rounds": found["rounds"],
            "skipped_lines": found["skipped"],
            # the evaluation's file once it is written; until then the cells received so far
            "cross_val": cross_val if cross_val is not None else (found["validation"] or None),
            "cross_val_file": str(cross_val_file) if cross_val_file else None,
        }


def find_cross_val(run_dir: Path) -> Path | None:
    """The cross-site evaluation results of a run: in `cross_site_val/` (the default `cross_val_dir`), else in
    whichever folder of the run the config named."""
    default = run_dir / "cross_site_val" / RESULTS_FILE
    if default.is_file():
        return default
    return next((path for path in sorted(run_dir.glob(f"*/{RESULTS_FILE}")) if path.is_file()), None)


def read_cross_val(path: Path) -> dict[str, Any] | None:
    """The matrix {data_site: {model: {metric: value}}} in `path`, or None (logged) if it is not one."""
    try:
        if path.stat().st_size > MAX_CROSS_VAL_BYTES:
            raise ValueError(f"larger than {MAX_CROSS_VAL_BYTES} bytes")
        matrix = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("cannot read the cross-site evaluation results %s: %s", path, exc)
        return None
    cells_ok = isinstance(matrix, dict) and all(
        isinstance(row, dict) and all(isinstance(cell, dict) for cell in row.values()) for row in matrix.values()
    )
    if not cells_ok:
        log.warning("%s is not a matrix of {data_site: {model: {metric: value}}}", path)
        return None
    return matrix
