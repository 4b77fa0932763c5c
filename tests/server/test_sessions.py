"""The registry of client sites: sessions, heartbeats, the grace period, and which status report wins."""

from __future__ import annotations

import pytest

from fl_broker.protocol.control import Request
from fl_broker.server import sessions
from fl_broker.server.commands.sessions import SessionCommands
from fl_broker.server.sessions import ClientRegistry


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(sessions.time, "monotonic", fake)
    return fake


def test_register_reports_whether_an_older_session_was_replaced(clock):
    registry = ClientRegistry(grace=30)
    assert registry.register("site-1", "a", {}) is False
    assert registry.register("site-1", "a", {}) is False  # the same session again: nothing replaced
    assert registry.register("site-1", "b", {}) is True
    assert registry.heartbeat("site-1", "a", {}) is False  # the old session is unknown now
    assert registry.heartbeat("site-1", "b", {}) is True


def test_heartbeat_of_an_unknown_site_asks_it_to_register(clock):
    assert ClientRegistry(grace=30).heartbeat("site-9", "s", {}) is False


def test_a_site_is_gone_after_the_grace_period_and_back_with_a_heartbeat(clock):
    registry = ClientRegistry(grace=30)
    registry.register("site-2", "s", {})
    registry.register("site-1", "s", {})
    assert registry.alive() == ["site-1", "site-2"]
    clock.now += 20
    registry.heartbeat("site-1", "s", {})
    clock.now += 15
    assert registry.alive() == ["site-1"]
    rows = {row["site"]: row for row in registry.snapshot()}
    assert rows["site-2"]["alive"] is False and rows["site-2"]["seconds_since_heartbeat"] == 35.0
    assert rows["site-1"]["alive"] is True and rows["site-1"]["seconds_since_heartbeat"] == 15.0
    registry.heartbeat("site-2", "s", {})
    assert registry.alive() == ["site-1", "site-2"]


def test_started_lists_live_sites_whose_app_runs_the_given_run(clock):
    registry = ClientRegistry(grace=30)
    registry.register("site-1", "s", {"status": "started", "run": 2})
    registry.register("site-2", "s", {"status": "started", "run": 1})
    registry.register("site-3", "s", {"status": "stopped", "run": 2})
    assert registry.started(2) == ["site-1"]
    clock.now += 31
    assert registry.started(2) == []


def test_sites_being_started_count_only_once_the_whole_start_app_is_answered(clock):
    registry = ClientRegistry(grace=30)
    registry.register("site-1", "s", {"status": "started", "run": 2})  # already running run 2: not held
    for site in ("site-2", "site-3"):
        registry.register(site, "s", {"status": "stopped", "run": None})
    with registry.holding(["site-1", "site-2", "site-3"], 2):
        registry.update_status("site-2", {"status": "started", "run": 2})  # answered first
        registry.heartbeat("site-2", "s", {"status": "started", "run": 2})
        assert registry.started(2) == ["site-1"]
        with registry.holding(["site-2"], 2):  # a second start_app while the first is in flight
            pass
        assert registry.started(2) == ["site-1"]
        registry.update_status("site-3", {"status": "started", "run": 2})
    assert registry.started(2) == ["site-1", "site-2", "site-3"]


def test_snapshot_shows_the_worker_report_sorted_by_site(clock):
    registry = ClientRegistry(grace=30)
    registry.register("site-2", "s", {"app": "hello", "run": 1, "status": "started", "task": "train"})
    registry.register("site-1", "s", {})
    rows = registry.snapshot()
    assert [row["site"] for row in rows] == ["site-1", "site-2"]
    assert {k: rows[1][k] for k in ("app", "run", "status", "task")} == {
        "app": "hello",
        "run": 1,
        "status": "started",
        "task": "train",
    }
    assert rows[0]["status"] is None


def test_remove_forgets_a_site_once(clock):
    registry = ClientRegistry(grace=30)
    registry.register("site-1", "s", {})
    assert registry.remove("site-1") is True
    assert registry.remove("site-1") is False
    assert registry.alive() == [] and registry.snapshot() == []


def test_a_heartbeat_overtaken_by_a_newer_status_is_ignored(clock):
    registry = ClientRegistry(grace=30)
    registry.register("site-1", "s", {"status": "stopped", "run": 1, "seq": 1})
    registry.update_status("site-1", {"status": "started", "run": 1, "seq": 3})  # from the start_app reply
    registry.heartbeat("site-1", "s", {"status": "stopped", "run": 1, "seq": 2})  # sent before, handled after
    assert registry.started(1) == ["site-1"]
    registry.heartbeat("site-1", "s", {"status": "stopped", "run": 1, "seq": 4})
    assert registry.started(1) == []


def test_a_report_without_a_sequence_number_is_taken(clock):
    registry = ClientRegistry(grace=30)
    registry.register("site-1", "s", {"status": "started", "run": 1, "seq": 5})
    registry.update_status("site-1", {"status": "stopped", "run": 1})
    assert registry.started(1) == []


def test_update_status_of_an_unknown_site_registers_nothing(clock):
    registry = ClientRegistry(grace=30)
    registry.update_status("site-1", {"status": "started", "run": 1})
    assert registry.snapshot() == []


def test_a_site_that_goes_quiet_is_logged_gone_once_and_back_when_it_returns(clock, caplog):
    registry = ClientRegistry(grace=30)
    registry.register("site-1", "a", {})
    caplog.set_level("INFO", logger="fl_broker.server.sessions")
    clock.now += 31
    assert registry.alive() == [] and registry.started(1) == [] and not registry.snapshot()[0]["alive"]
    gone = [r.getMessage() for r in caplog.records if "is gone" in r.getMessage()]
    assert gone == ["site-1 is gone: no heartbeat for 31.0 s (grace 30 s); it counts again once it heartbeats"]
    assert caplog.records[0].levelname == "WARNING"
    clock.now += 5
    assert registry.heartbeat("site-1", "a", {}) is True and registry.alive() == ["site-1"]
    assert caplog.records[-1].getMessage() == "site-1 is back: heartbeating again after 36.0 s"


def test_a_site_that_leaves_is_logged_with_the_reason(clock, caplog):
    registry = ClientRegistry(grace=30)
    registry.register("site-1", "a", {})
    caplog.set_level("INFO", logger="fl_broker.server.sessions")
    assert registry.remove("site-1", "shut down") and not registry.remove("site-1", "shut down")
    assert [r.getMessage() for r in caplog.records] == ["site-1 left: shut down"]


def test_a_stale_heartbeat_is_not_taken_for_a_restart_of_the_site(clock):
    registry = ClientRegistry(grace=30)
    seen: list[dict] = []
    commands = SessionCommands(clients=registry, seen=lambda site, status: seen.append(status))
    registry.register("site-1", "s", {"status": "stopped", "run": 1, "seq": 1})
    registry.update_status("site-1", {"status": "started", "run": 1, "seq": 3})  # the start_app reply
    stale = {"site": "site-1", "session": "s", "status": {"status": "stopped", "run": 1, "seq": 2}}
    assert commands.cmd_heartbeat(Request("heartbeat", stale)) == {"known": True}
    assert seen == [{"status": "started", "run": 1, "seq": 3}]  # so the run control does not redeploy it
