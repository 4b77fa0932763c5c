"""Targets of a command (server, client, all), the one dispatcher of its steps, and asking many sites."""

from __future__ import annotations

import time
import uuid

import pytest

from fl_broker.errors import InvalidSiteName
from fl_broker.protocol.control import BadRequest, Request, RequestServer
from fl_broker.server.fanout import SiteFanout, Targets
from fl_broker.server.sessions import ClientRegistry
from fl_broker.transport.memory import MemoryBroker
from fl_broker.wire import names


@pytest.fixture
def registry() -> ClientRegistry:
    registry = ClientRegistry(grace=30)
    for site in ("site-1", "site-2"):
        registry.register(site, "s", {})
    return registry


@pytest.fixture
def broker() -> MemoryBroker:
    broker = MemoryBroker.named(f"test-{uuid.uuid4().hex}")
    broker.connect(user="server").declare(names.server_topology())
    return broker


def make_fanout(broker: MemoryBroker, registry: ClientRegistry, timeout: float = 5.0) -> SiteFanout:
    fanout = SiteFanout(broker.connect(user="server"), registry, timeout=timeout, run=lambda: 7)
    fanout.start()
    return fanout


def request(command: str, **args) -> Request:
    return Request(command, args)


def test_targets_default_to_all_live_sites(broker, registry):
    fanout = make_fanout(broker, registry)
    assert fanout.targets(request("abort")) == Targets("all", ["site-1", "site-2"])
    assert fanout.targets(request("abort", target="client", sites=["site-2"])) == Targets("client", ["site-2"])
    assert fanout.targets(request("sys_info"), default="server").target == "server"


def test_check_status_asks_every_registered_site_even_a_silent_one(broker):
    registry = ClientRegistry(grace=30)
    registry.register("site-1", "s", {})
    registry.register("site-2", "s", {})
    registry.grace = -1  # nobody heartbeated within the grace period
    fanout = make_fanout(broker, registry)
    assert fanout.targets(request("abort")).sites == []
    assert fanout.targets(request("check_status")).sites == ["site-1", "site-2"]


def test_bad_targets_and_site_names_are_bad_requests(broker, registry):
    fanout = make_fanout(broker, registry)
    with pytest.raises(BadRequest, match="start_app: target must be server, client or all, got 'moon'"):
        fanout.targets(request("start_app", target="moon"))
    with pytest.raises(InvalidSiteName, match="site"):
        fanout.targets(request("abort", sites=["../etc"]))


def test_dispatch_runs_only_the_addressed_steps_in_order(broker, registry):
    fanout = make_fanout(broker, registry)
    order: list[str] = []

    def server() -> str:
        order.append("server")
        return "done"

    def clients(sites: list[str]) -> dict:
        order.append("clients")
        return {site: {"ok": True} for site in sites}

    everyone = Targets("all", ["site-1"])
    assert fanout.dispatch(everyone, server=server, clients=clients) == {
        "server": "done",
        "clients": {"site-1": {"ok": True}},
    }
    assert order == ["server", "clients"]
    order.clear()
    fanout.dispatch(everyone, server=server, clients=clients, clients_first=True)
    assert order == ["clients", "server"]
    assert fanout.dispatch(Targets("server", ["site-1"]), server=server, clients=clients) == {"server": "done"}
    assert fanout.dispatch(Targets("client", []), server=server, clients=clients) == {"clients": {}}
    assert fanout.dispatch(everyone, clients=clients) == {"clients": {"site-1": {"ok": True}}}


def serve_site(broker: MemoryBroker, site: str, handlers: dict) -> RequestServer:
    transport = broker.connect(user=site)
    transport.declare(names.site_topology(site))
    server = RequestServer(transport, names.site_control_queue(site), handlers)
    server.start()
    return server


def test_ask_collects_each_sites_answer_or_why_there_is_none(broker, registry):
    seen: list[tuple[str, dict, int]] = []

    def status(req: Request) -> dict:
        seen.append((req.command, req.args, req.run))
        return {"status": {"status": "started", "run": 7}}

    def refuse(req: Request) -> None:
        raise BadRequest("not now")

    serve_site(broker, "site-1", {"check_status": status})
    serve_site(broker, "site-2", {"check_status": refuse})
    broker.connect(user="site-3").declare(names.site_topology("site-3"))  # a queue, but nobody reads it
    fanout = make_fanout(broker, registry, timeout=0.5)
    assert registry.started(7) == []
    started = time.monotonic()
    answers = fanout.ask(["site-1", "site-2", "site-3", "site-4"], "check_status", {"x": 1})
    assert time.monotonic() - started < 3  # one deadline for all sites, not one per site
    assert answers["site-1"] == {"ok": True, "result": {"status": {"status": "started", "run": 7}}}
    assert answers["site-2"] == {"ok": False, "error": "not now"}
    assert answers["site-3"] == {"ok": False, "error": "no reply"}
    assert answers["site-4"]["ok"] is False and answers["site-4"]["error"].startswith("could not reach site-4")
    assert seen == [("check_status", {"x": 1}, 7)]
    assert registry.started(7) == ["site-1"]  # the status in site-1's reply was taken


def test_forward_is_a_client_step_sending_one_command(broker, registry):
    serve_site(broker, "site-1", {"abort": lambda req: "aborted"})
    fanout = make_fanout(broker, registry)
    assert fanout.forward("abort")(["site-1"]) == {"site-1": {"ok": True, "result": "aborted"}}


def test_asking_before_start_is_a_clear_error(broker, registry):
    fanout = SiteFanout(broker.connect(user="server"), registry, timeout=1, run=lambda: None)
    with pytest.raises(RuntimeError, match="start"):
        fanout.ask(["site-1"], "abort", {})
