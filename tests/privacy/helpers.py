"""Shareables and filter contexts for the privacy filters' tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fl_broker.fl.context import RunContext
from fl_broker.fl.filters import Direction, FilterContext
from fl_broker.wire.messages import DXO, DataKind, MetaKey, Shareable


def result_of(data: dict[str, Any], kind: DataKind = DataKind.WEIGHT_DIFF, steps: float | None = None) -> Shareable:
    """A result Shareable carrying `data` as a DXO of `kind` (NUM_STEPS_CURRENT_ROUND `steps` if given)."""
    meta = {} if steps is None else {MetaKey.NUM_STEPS_CURRENT_ROUND: steps}
    return DXO(data_kind=kind, data=data, meta=meta).to_shareable()


def context(task_data: Shareable | None = None, current_round: int | None = 0) -> FilterContext:
    """A site-1 result-filter context for task 'train'."""
    run = RunContext("site-1", 1, Path("/nonexistent/run_1"), Path("/nonexistent/run_1/app_site-1"))
    return FilterContext(
        run=run,
        direction=Direction.TASK_RESULT,
        task_name="train",
        task_id="t1",
        peer="server",
        current_round=current_round,
        task_data=task_data,
    )


def read_only(array: np.ndarray) -> np.ndarray:
    """`array` made read-only, as arrays decoded from the wire are."""
    array = np.array(array)
    array.flags.writeable = False
    return array
