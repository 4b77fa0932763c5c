"""On a real RabbitMQ node: results the server has taken in but not yet reached (spooled, decoded and queued
for the workflow) hold no resident pages, so with many sites their waiting costs no memory; reading them
afterwards still gives their bytes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from fl_broker.protocol.tasks import ResultMessage
from fl_broker.server.task_channel import BrokerTaskChannel
from fl_broker.wire import names
from fl_broker.wire.messages import DXO, DataKind
from tests.transport.test_rabbitmq import connect

pytestmark = pytest.mark.rabbitmq
__all__ = ["connect"]  # the fixture

SITES = 4
ELEMENTS = 256 * 1024  # 1 MiB of float32: 16 chunks of 64 KiB


def resident_kib(directory: Path) -> dict[str, int]:
    """This process's resident KiB in each map of a file under `directory`."""
    found: dict[str, int] = {}
    current = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            parts = line.split(maxsplit=5)
            current = parts[5] if len(parts) > 5 and parts[5].startswith(str(directory)) else None
        elif current and line.startswith("Rss:"):
            found[current] = found.get(current, 0) + int(line.split()[1])
    return found


def test_results_waiting_for_the_workflow_hold_no_resident_pages(connect, tmp_path: Path) -> None:
    transport = connect(chunk_size=64 * 1024)
    transport.declare(names.server_topology())
    spool = tmp_path / "spool"
    channel = BrokerTaskChannel(transport, spool_dir=spool)
    channel.start()
    channel.open_run(1)
    try:
        site = connect(chunk_size=64 * 1024)
        for i in range(SITES):
            model = np.full(ELEMENTS, float(i + 1), np.float32)
            shareable = DXO(DataKind.WEIGHTS, {"w": model}).to_shareable()
            shareable.task_id, shareable.task_name = "run1-train-round0", "train"
            site.publish(names.RESULT_EXCHANGE, names.SERVER, ResultMessage(1, f"site-{i + 1}", 0, shareable).encode())
        results = [channel.receive(15) for _ in range(SITES)]
        assert all(result is not None for result in results), "not every result was handed over"
        maps = resident_kib(spool)
        assert len(maps) == SITES, maps  # each result is a map of its spool file...
        assert set(maps.values()) == {0}, maps  # ...and none of its pages is resident while it waits
        totals = sorted(float(r.shareable.dxo.data["w"].sum()) for r in results if r and r.shareable.dxo)
        assert totals == [float(ELEMENTS * (i + 1)) for i in range(SITES)]
        for result in results:
            assert result is not None
            result.accept()
    finally:
        channel.stop()
