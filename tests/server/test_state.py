"""The server's run state and engine.json: what a restarted server takes back."""

from __future__ import annotations

import json
import logging

from fl_broker.server.state import MAX_ERRORS_SHOWN, EngineState, EngineStatus


def test_a_saved_state_is_restored_by_a_new_server(tmp_path):
    state = EngineState(tmp_path / "engine.json")
    with state.lock:
        state.run_number, state.app_name, state.status = 3, "hello", EngineStatus.STARTED
        state.run_sites = {"site-2", "site-1"}
    state.save()
    assert json.loads((tmp_path / "engine.json").read_text()) == {
        "run_number": 3,
        "app_name": "hello",
        "running": True,
        "run_sites": ["site-1", "site-2"],
    }
    again = EngineState(tmp_path / "engine.json")
    saved = again.restore()
    assert saved is not None and saved.running and saved.run_number == 3
    assert (again.run_number, again.app_name, again.run_sites) == (3, "hello", {"site-1", "site-2"})
    assert again.status == EngineStatus.STOPPED  # resuming the run is the run control's job
    assert not list(tmp_path.glob("*.tmp"))


def test_starting_counts_as_running_and_stopping_does_not(tmp_path):
    state = EngineState(tmp_path / "engine.json")
    for status, running in [
        (EngineStatus.STARTING, True),
        (EngineStatus.STOPPING, False),
        (EngineStatus.STOPPED, False),
    ]:
        state.status = status
        assert state.running is running
        state.save()
        assert json.loads((tmp_path / "engine.json").read_text())["running"] is running


def test_no_file_means_a_fresh_server(tmp_path):
    state = EngineState(tmp_path / "engine.json")
    assert state.restore() is None
    assert (state.run_number, state.app_name, state.run_sites) == (None, None, set())


def test_an_unreadable_file_is_ignored_with_a_warning(tmp_path, caplog):
    for text in ("{not json", "[1, 2]", '{"run_sites": 5}'):
        (tmp_path / "engine.json").write_text(text)
        state = EngineState(tmp_path / "engine.json")
        with caplog.at_level(logging.WARNING, logger="fl_broker.server.state"):
            assert state.restore() is None
        assert state.run_number is None
        assert "ignoring unreadable" in caplog.text
        caplog.clear()


def test_errors_are_counted_and_the_latest_shown(tmp_path):
    state = EngineState(tmp_path / "engine.json")
    for i in range(MAX_ERRORS_SHOWN + 5):
        state.add_error(f"error {i}")
    assert state.error_count() == MAX_ERRORS_SHOWN + 5
    shown = state.errors()
    assert len(shown) == MAX_ERRORS_SHOWN and shown[0] == "error 5" and shown[-1] == f"error {MAX_ERRORS_SHOWN + 4}"
