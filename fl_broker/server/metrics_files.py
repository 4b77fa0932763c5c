"""Writes a run's metrics records to `metrics.jsonl` and the TensorBoard files on a thread of its own, so that
the round never waits for the disk.

Measured on hello-numpy-sag with 8 sites (3x3 model), writing on the workflow thread cost 11-18 ms a round:
TensorBoard's flush at every round's end fsyncs one event file per site and one for the mean (9 fsyncs),
and every scalar goes through tensorboardX's queue and its writer threads. Here the records are queued in
order and written in batches; TensorBoard files are flushed at most every `tb_flush_seconds` (and at close),
which is still sooner than TensorBoard reloads them (30 s by default).

Nothing here is needed to resume a run (the checkpoint is): a record not yet written when the process is
killed is lost, as a line torn by the kill already was. `close()` writes everything queued before it returns.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from fl_broker.server.tensorboard import TensorBoardFiles

log = logging.getLogger(__name__)

MEAN_ORIGIN = "server"  # the TensorBoard folder of the rounds' means (no site may be called "server")
TB_FLUSH_SECONDS = 2.0

_CLOSE = object()


class MetricsFiles:
    """The writer thread of one run's metrics files. `write(record)` returns at once; disk errors are logged
    once, never raised."""

    def __init__(
        self, path: Path, tensorboard: TensorBoardFiles | None, *, tb_flush_seconds: float = TB_FLUSH_SECONDS
    ) -> None:
        self.path = path
        self._tensorboard = tensorboard
        self._tb_flush_seconds = tb_flush_seconds
        self._tb_dirty = False
        self._tb_flushed_at = time.monotonic()
        self._write_failed = False
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="metrics-files", daemon=True)
        self._thread.start()

    def write(self, record: dict[str, Any]) -> None:
        """Queue `record` (a metrics.jsonl line) to be written in order."""
        self._queue.put(record)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, flush and close the TensorBoard files, stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_CLOSE)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            batch, closing = self._next_batch()
            try:
                self._append(batch)
                for record in batch:
                    self._to_tensorboard(record)
                if closing:
                    if self._tensorboard is not None:
                        self._tensorboard.close()
                    return
                self._flush_if_due()
            except Exception:  # a bug here must not end the thread: later records would pile up unwritten
                log.exception("writing metrics to %s failed", self.path)
                if closing:
                    return

    def _next_batch(self) -> tuple[list[dict[str, Any]], bool]:
        """The records queued (waiting for one at most until a TensorBoard flush is due), and whether close()
        was called after them."""
        wait = max(0.01, self._tb_flushed_at + self._tb_flush_seconds - time.monotonic()) if self._tb_dirty else None
        batch: list[dict[str, Any]] = []
        try:
            item = self._queue.get(timeout=wait)
            while True:
                if item is _CLOSE:
                    return batch, True
                batch.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            return batch, False

    def _append(self, batch: list[dict[str, Any]]) -> None:
        lines = []
        for record in batch:
            try:
                lines.append(json.dumps(record, allow_nan=False) + "\n")
            except ValueError as exc:  # e.g. a NaN metric: that record alone is left out
                self._failed(exc)
        if not lines:
            return
        try:
            with self.path.open("a", encoding="utf-8") as file:
                file.write("".join(lines))
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        if not self._write_failed:  # the first failure is enough to say
            self._write_failed = True
            log.warning("could not record metrics in %s: %s", self.path, exc)

    def _to_tensorboard(self, record: dict[str, Any]) -> None:
        if self._tensorboard is None:
            return
        kind, metrics = record["kind"], record["metrics"]
        if kind == "site":
            self._tensorboard.scalars(str(record["site"]), metrics, int(record["round"]))
        elif kind == "round":
            self._tensorboard.scalars(MEAN_ORIGIN, metrics, int(record["round"]))
        else:
            self._tensorboard.scalars(str(record["site"]), metrics, 0, prefix=f"cross_val/{record['model']}/")
        self._tb_dirty = True

    def _flush_if_due(self) -> None:
        if self._tensorboard is None or not self._tb_dirty:
            return
        if time.monotonic() - self._tb_flushed_at >= self._tb_flush_seconds:
            self._tensorboard.flush()
            self._tb_dirty, self._tb_flushed_at = False, time.monotonic()
