"""A server killed at any instruction of a run resumes to exactly hello-numpy-sag's final weights.

Every point where a kill can change what is on disk is just before a file-system write, so the test kills
the run there: a forked child runs the server side of hello-numpy-sag (its real config, persistor,
aggregator and generator; two scripted clients that add 1) with an audit hook that calls os._exit() just
before its N-th write under the run folder (open for writing, rename, mkdir, remove), for every N until a
run gets through. A variant also leaves the file being renamed half written, as a kill in the middle of
writing it would. Another child then resumes the run from what is on disk, and the final model must be
[[11,12,13],[14,15,16],[17,18,19]] in run_1/models/server.npy and in the checkpoint.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fl_broker.apps.loader import load_server_app
from fl_broker.fl.checkpoint import read_checkpoint
from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.progress import Phase
from tests.fl.fakes import FakeChannel, RecordingRuntime, add_delta
from tests.support.federation import APP

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

EXPECTED = np.array([[11, 12, 13], [14, 15, 16], [17, 18, 19]], dtype=np.float32)
KILLED, FINISHED, NOT_FINISHED, CRASHED = 137, 0, 3, 4
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def writes_under(folder: Path, event: str, args: tuple[Any, ...]) -> Path | None:
    """The path an audited call would change under `folder` (for a rename: its source), or None."""
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITE_FLAGS)
        if not writing:
            return None
    elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "os.truncate"):
        path = args[0]
    else:
        return None
    if isinstance(path, int):
        return None
    path = Path(os.fsdecode(path))
    return path if path.is_relative_to(folder) else None


def kill_before_write(folder: Path, n: int, *, torn: bool) -> None:
    """Install an audit hook that ends this process just before its n-th write under `folder`. With `torn`
    and a rename as the n-th write, the file about to be renamed is first cut to half its size."""
    count = 0

    def hook(event: str, args: tuple[Any, ...]) -> None:
        nonlocal count
        path = writes_under(folder, event, args)
        if path is None:
            return
        count += 1
        if count == n:
            if torn and event == "os.rename" and path.is_file():
                os.truncate(path, path.stat().st_size // 2)
            os._exit(KILLED)

    sys.addaudithook(hook)  # for the rest of this (child) process's short life


def run_in_child(run_dir: Path, before: Callable[[], None] = lambda: None, app_dir: Path = APP) -> int:
    """Run the server side of hello-numpy-sag (or of the app in `app_dir`) on `run_dir` in a forked child; its
    exit code."""
    app = load_server_app(app_dir)  # in the parent: the child starts with a fresh workflow and aggregator
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = CRASHED
        try:
            before()
            context = RunContext("server", 1, run_dir, app_dir)
            channel = FakeChannel({"site-1": add_delta(), "site-2": add_delta()})
            runtime = RecordingRuntime(
                context=context, channel=channel, abort_signal=Signal(), live_clients=lambda: ["site-1", "site-2"]
            )
            app.workflow.run(runtime)
            code = FINISHED if runtime.progress.phase == Phase.FINISHED else NOT_FINISHED
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def assert_exact_final_weights(run_dir: Path) -> None:
    server_npy = np.load(run_dir / "models" / "server.npy")
    assert server_npy.dtype == np.float32
    np.testing.assert_array_equal(server_npy, EXPECTED)
    checkpoint = read_checkpoint(run_dir)
    assert checkpoint is not None and checkpoint.next_round == 10
    np.testing.assert_array_equal(checkpoint.model["numpy_key"], EXPECTED)


def kill_points(
    tmp_path: Path,
    name: str,
    *,
    torn: bool,
    prepare: Callable[[Path], None] = lambda d: None,
    app_dir: Path = APP,
    check: Callable[[Path], None] = assert_exact_final_weights,
) -> int:
    """Kill a run (of hello-numpy-sag, or of the app in `app_dir`) before its n-th write for n = 1, 2, ...
    until one gets through; resume each killed run and `check` its final weights. The number of kill points
    tried."""
    n = 0
    while True:
        n += 1
        run_dir = tmp_path / f"{name}-{n}" / "run_1"
        prepare(run_dir)
        code = run_in_child(run_dir, lambda d=run_dir, k=n: kill_before_write(d, k, torn=torn), app_dir)
        if code == FINISHED:
            check(run_dir)
            return n - 1
        assert code == KILLED, f"the run killed before write {n} exited with {code}"
        resumed = run_in_child(run_dir, app_dir=app_dir)
        assert resumed == FINISHED, f"the run killed before write {n} did not resume to its end"
        check(run_dir)


@pytest.mark.parametrize("torn", [False, True], ids=["clean", "torn"])
def test_a_kill_before_any_write_resumes_to_the_exact_weights(tmp_path, torn):
    points = kill_points(tmp_path, "kill", torn=torn)
    assert points >= 10 * 3  # at least the commit's write and rename and the persistor's write, every round


def test_a_second_kill_while_resuming_changes_nothing(tmp_path):
    """Killed once right after the 4th commit (the checkpoint ahead of server.npy, the case that used to
    resume a round behind its model), then again at every write of the resumed run."""

    def killed_after_fourth_commit(run_dir: Path) -> None:
        renames = 0

        def hook(event: str, args: tuple[Any, ...]) -> None:
            nonlocal renames
            if event == "os.rename" and writes_under(run_dir, event, args) is not None:
                if Path(os.fsdecode(args[1])).name == "checkpoint.msgpack":
                    renames += 1
                elif renames == 4:  # the commit of round 3 is done; this is the persistor's rename
                    os._exit(KILLED)

        sys.addaudithook(hook)

    def prepare(run_dir: Path) -> None:
        assert run_in_child(run_dir, lambda: killed_after_fourth_commit(run_dir)) == KILLED
        checkpoint = read_checkpoint(run_dir)
        assert checkpoint is not None and checkpoint.next_round == 4
        behind = np.load(run_dir / "models" / "server.npy")
        np.testing.assert_array_equal(behind, EXPECTED - 10 + 3)  # server.npy still holds round 2's model

    assert kill_points(tmp_path, "twice", torn=False, prepare=prepare) >= 6 * 3
