"""The broker a worker test runs on: the in-process one, and the suite's RabbitMQ node."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh in-process broker, or a fresh vhost on the suite's node."""
    if request.param == "memory":
        yield f"memory://worker-{uuid.uuid4().hex}"
    else:
        yield request.getfixturevalue("rabbitmq_url")
