"""Fixtures for the operations tests: a fresh vhost loaded with provisioned users, permissions and topology."""

from __future__ import annotations

import urllib.error
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fl_broker.ops import provision

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "hello-numpy-sag"


@dataclass
class Provisioned:
    """A provisioned federation on the suite's node: the plan, its files, and the node's admin handle."""

    plan: provision.Plan
    out: Path
    node: object  # tests.conftest.RabbitNode

    def url(self, user: str) -> str:
        return self.plan.url(self.plan.account(user))

    def env(self, user: str) -> dict[str, str]:
        return provision.read_env_file(self.out / f"{user}.env")


@pytest.fixture
def provisioned(rabbitmq_node, tmp_path) -> Iterator[Provisioned]:  # type: ignore[no-untyped-def]
    """Users server/admin/site-1/site-2 (unique names per test) on a fresh vhost, loaded via POST /api/definitions."""
    suffix = uuid.uuid4().hex[:6]
    vhost = f"ops-{suffix}"
    amqp = urllib.parse.urlsplit(rabbitmq_node.amqp_base)
    plan = provision.make_plan(
        ["site-1", "site-2"],
        server="server",
        admin="admin",
        vhost=vhost,
        host=amqp.hostname or "127.0.0.1",
        port=amqp.port,
        mgmt_url=rabbitmq_node.mgmt_url,
    )
    out = tmp_path / "provision"
    provision.write_plan(plan, out)
    rabbitmq_node.api("POST", "/api/definitions", _load(out / "definitions.json"))
    try:
        yield Provisioned(plan, out, rabbitmq_node)
    finally:
        rabbitmq_node.delete_vhost(vhost)
        for account in plan.accounts:
            try:
                rabbitmq_node.api("DELETE", f"/api/users/{urllib.parse.quote(account.user, safe='')}")
            except urllib.error.HTTPError:
                pass


def _load(path: Path) -> object:
    import json

    return json.loads(path.read_text())
