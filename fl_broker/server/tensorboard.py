"""TensorBoard event files of a run's metrics, through tensorboardX (the optional extra `metrics`).

One writer per origin, each in its own folder under `run_N/tb_events/`: `site-1/`, `site-2/` ... for what
each site reported, `server/` for the round's weighted mean. TensorBoard shows each folder as a run, so one
chart per metric name holds every site's curve and the mean's. Without tensorboardX the server goes on
without these files and says so once.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'fl-broker[metrics]'"
_told = threading.Event()  # the "files are off" line is said once per process, not once per run


def summary_writer_class() -> Any:
    """The writer of one origin's event file (ScalarEventFile), or None when tensorboardX is not installed
    (said once, at info level)."""
    try:
        _tensorboardx_without_torch()
    except ImportError as exc:
        if not _told.is_set():
            _told.set()
            log.info("TensorBoard event files are off (%s): %s to have them under run_N/tb_events/", exc, INSTALL_HINT)
        return None
    return ScalarEventFile


class ScalarEventFile:
    """Scalars appended to one event file in `logdir`, on the caller's thread (MetricsFiles' own), through
    tensorboardX's record writer and protobufs. Its SummaryWriter sends every scalar through a
    multiprocessing queue to two threads of its own per file: measured with bench/bench_breakdown.py --size 9,
    that cost the server 1.4-1.8 ms of CPU a round with 2 sites and 5.5 ms with 8."""

    def __init__(self, *, logdir: str, **_: Any) -> None:
        tbx = _tensorboardx_without_torch()
        os.makedirs(logdir, exist_ok=True)
        self._event, self._scalar = tbx.proto.event_pb2.Event, tbx.summary.scalar
        # The file name TensorBoard looks for: events.out.tfevents.<time>.<host>
        self._file = tbx.event_file_writer.EventsWriter(os.path.join(logdir, "events"))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        """Append `value` as scalar `tag` at `step`, stamped with the time now."""
        event = self._event(wall_time=time.time(), step=int(step), summary=self._scalar(tag, value))
        self._file.write_event(event)

    def flush(self) -> None:
        """Write what is buffered and sync it to disk."""
        self._file.flush()

    def close(self) -> None:
        """Flush, then close the file."""
        self._file.close()


def _tensorboardx_without_torch() -> Any:
    """The tensorboardX package with the modules used here, imported with torch hidden when the process has
    not loaded torch: tensorboardX imports torch if it can (for tensors we never pass), which cost the server
    0.8 s at its first run and 190 MB of RSS where the pt extra is installed. A process that uses torch keeps
    it."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
    try:
        import tensorboardX.event_file_writer
        import tensorboardX.proto.event_pb2
        import tensorboardX.summary
    finally:
        if hide and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return tensorboardX


class TensorBoardFiles:
    """Scalars written to one event file per origin under `folder`; errors are logged, never raised."""

    def __init__(self, folder: Path, writer_class: Any) -> None:
        self.folder = folder
        self._writer_class = writer_class
        self._writers: dict[str, Any] = {}
        self._failed = False

    @classmethod
    def open(cls, folder: Path) -> TensorBoardFiles | None:
        """Files under `folder` if tensorboardX is there, else None."""
        writer_class = summary_writer_class()
        return None if writer_class is None else cls(folder, writer_class)

    def scalars(self, origin: str, metrics: Mapping[str, float], step: int, *, prefix: str = "") -> None:
        """Write each metric as scalar `prefix + name` at `step` in `origin`'s event file."""
        try:
            writer = self._writer(origin)
            for name, value in metrics.items():
                writer.add_scalar(prefix + name, value, step)
        except Exception as exc:  # a full disk or a broken install must not stop the run
            self._fail(exc)

    def flush(self) -> None:
        """Put what was written on disk (TensorBoard reads it from there)."""
        for writer in list(self._writers.values()):
            try:
                writer.flush()
            except Exception as exc:
                self._fail(exc)

    def close(self) -> None:
        """Flush and close every writer."""
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            try:
                writer.close()
            except Exception as exc:
                self._fail(exc)

    def _writer(self, origin: str) -> Any:
        writer = self._writers.get(origin)
        if writer is None:
            writer = self._writer_class(logdir=str(self.folder / origin))  # flushed by MetricsFiles' thread
            self._writers[origin] = writer
        return writer

    def _fail(self, exc: Exception) -> None:
        if not self._failed:  # the first failure is enough to say
            self._failed = True
            log.warning("could not write TensorBoard events under %s: %s", self.folder, exc)
