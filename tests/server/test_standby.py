"""The active role of servers sharing a workspace (fl_broker/server/standby.py), on the in-process broker: one
active, the others waiting without consuming, a takeover when the active one's connection goes, and the
fencing check that stops a replaced server before it writes. Real processes: tests/reliability/."""

from __future__ import annotations

import threading

import pytest

from fl_broker.server import standby
from fl_broker.server.standby import ActiveRole, ServerIdentity, read_active, write_active
from fl_broker.server.state import EngineState
from fl_broker.transport.memory import MemoryBroker
from fl_broker.wire import names


class Fenced(Exception):
    """Stands in for the process exit of standby.self_fence."""


@pytest.fixture
def fenced(monkeypatch) -> list[str]:
    reasons: list[str] = []

    def fence(reason: str) -> None:
        reasons.append(reason)
        if threading.current_thread() is threading.main_thread():  # the watch thread just records it
            raise Fenced(reason)

    monkeypatch.setattr(standby, "self_fence", fence)
    return reasons


def test_one_server_is_active_and_the_other_takes_over_when_its_connection_goes(tmp_path, fenced):
    broker = MemoryBroker()
    first_transport, second_transport = broker.connect("server"), broker.connect("server")
    first = ActiveRole(first_transport, tmp_path, poll=0.05)
    second = ActiveRole(second_transport, tmp_path, poll=0.05)
    assert first.wait_until_active(threading.Event())
    assert read_active(tmp_path) == first.identity and first.identity.epoch == 1
    took_over = threading.Event()
    waiter = threading.Thread(target=lambda: second.wait_until_active(threading.Event()) and took_over.set())
    waiter.start()
    try:
        deadline = threading.Event()
        while first.status()["standby_servers"] != 1 and not deadline.wait(0.02):
            pass
        assert first.status() == {"active_server": vars(first.identity), "standby_servers": 1}
        assert not took_over.wait(0.3)  # the lock is held: the second one only waits
        first.close()
        first_transport.close()  # the active server's connection goes: its lock with it
        assert took_over.wait(5)
    finally:
        waiter.join(5)
    assert read_active(tmp_path) == second.identity and second.identity.epoch == 2
    assert second.status()["standby_servers"] == 0  # no longer a standby itself
    second.check()  # the workspace names it: nothing happens
    assert fenced == []


def test_a_server_the_workspace_no_longer_names_is_fenced_before_it_writes(tmp_path, fenced):
    role = ActiveRole(MemoryBroker().connect("server"), tmp_path, poll=60)
    assert role.wait_until_active(threading.Event())
    state = EngineState(tmp_path / "engine.json", before_save=role.check)
    state.save()
    write_active(tmp_path, ServerIdentity(id="other:1:x", host="other", pid=1, since=0.0, epoch=2))
    with pytest.raises(Fenced):
        state.save()
    assert "names other pid 1 (id other:1:x) the active server (takeover 2)" in fenced[0]
    with pytest.raises(Fenced):
        role.on_event(None)  # type: ignore[arg-type]  # the hook before each lifecycle step checks too
    role.close()


def test_the_watch_fences_an_idle_active_server_that_was_replaced(tmp_path, fenced):
    role = ActiveRole(MemoryBroker().connect("server"), tmp_path, poll=0.05)
    assert role.wait_until_active(threading.Event())
    write_active(tmp_path, ServerIdentity(id="other:1:x", host="other", pid=1, since=0.0, epoch=2))
    deadline = threading.Event()
    while not fenced and not deadline.wait(0.05):
        pass
    role.close()
    assert fenced and "names other pid 1" in fenced[0]


def test_a_standby_asked_to_stop_leaves_without_becoming_active(tmp_path, fenced):
    broker = MemoryBroker()
    ActiveRole(broker.connect("server"), tmp_path, poll=0.05).wait_until_active(threading.Event())
    transport = broker.connect("server")
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    role = ActiveRole(transport, tmp_path, poll=0.05)
    assert not role.wait_until_active(stop)
    assert not role.active.is_set() and transport.consumer_count(names.SERVER_STANDBY_QUEUE) == 0
    role.check()  # not active: there is nothing to fence
    assert fenced == []


def test_an_unreadable_active_file_fences_nobody(tmp_path, fenced):
    role = ActiveRole(MemoryBroker().connect("server"), tmp_path, poll=60)
    assert role.wait_until_active(threading.Event())
    (tmp_path / standby.ACTIVE_FILE).write_text("{torn", encoding="utf-8")
    role.check()
    role.close()
    assert fenced == [] and read_active(tmp_path) is None
