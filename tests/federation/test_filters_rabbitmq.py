"""FLARE's filter chains end to end over the real RabbitMQ node, the server and the workers as processes:
the same two runs as on the in-process transport (tests/federation/test_filters.py)."""

from __future__ import annotations

import pytest

from tests.support.federation import running_federation
from tests.support.filter_apps import check_filters_end_to_end

pytestmark = pytest.mark.rabbitmq


def test_filter_chains_over_rabbitmq(tmp_path, rabbitmq_url):
    with running_federation(tmp_path / "ws", rabbitmq_url) as fed:
        check_filters_end_to_end(fed, tmp_path / "ws", tmp_path / "apps", log=fed.log)
        assert all(proc.poll() is None for proc in fed.procs.values())  # no program crashed
