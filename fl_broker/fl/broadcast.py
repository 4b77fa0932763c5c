"""Send one task to several sites and gather one answer from each: the step cross-site evaluation and
InitializeGlobalWeights share (FLARE's broadcast_and_wait)."""

from __future__ import annotations

import logging
import time

from fl_broker.fl.workflow import TaskResult, WorkflowRuntime
from fl_broker.wire.messages import Shareable

log = logging.getLogger(__name__)


def broadcast_and_gather(
    runtime: WorkflowRuntime,
    task: Shareable,
    sites: list[str],
    *,
    timeout: float,
    min_responses: int = 0,
    wait_after_min: float = 0,
) -> list[TaskResult]:
    """Send `task` (its task_id set) to `sites` and gather one answer per site, until every site answered,
    `wait_after_min` seconds after `min_responses` answers (0: wait for all), at `timeout` (0: none), or an
    abort. Results for other tasks (late, stray, duplicates) are refused as they come; the ones returned are
    for the caller to accept or refuse."""
    runtime.channel.send(task, sites, round=0)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    answers: dict[str, TaskResult] = {}
    while len(answers) < len(sites) and not runtime.abort_signal.triggered:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        result = runtime.channel.receive(min(left if left is not None else 0.5, 0.5))
        if result is None:
            continue
        if result.task_id != task.task_id or result.site not in sites or result.site in answers:
            result.refuse(f"result is for task {result.task_id!r}, not {task.task_id!r} (late, stray or duplicate)")
            continue
        answers[result.site] = result
        if min_responses and len(answers) == min_responses:
            enough_at = time.monotonic() + wait_after_min
            deadline = enough_at if deadline is None else min(deadline, enough_at)
    missing = sorted(set(sites) - set(answers))
    if missing and not runtime.abort_signal.triggered:
        log.warning("no answer to %s from %s", task.task_name, ", ".join(missing))
    return list(answers.values())
