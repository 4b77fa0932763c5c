"""Formatting outcomes: JSON lines for scripts, rich tables for people (no broker)."""

from __future__ import annotations

import io
import json
import re

from rich.console import Console

from admin.commands import Outcome, failed_sites
from admin.render import heartbeat, render, to_json

STATUS = {
    "engine_status": "started",
    "app_name": "hello-numpy-sag",
    "run_number": 1,
    "phase": "round 3",
    "current_round": 3,
    "num_rounds": 10,
    "rounds_done": 3,
    "registered_clients": [
        {"site": "site-1", "last_heartbeat": 1700000000.5, "seconds_since_heartbeat": 0.4, "alive": True},
        {"site": "site-2", "last_heartbeat": 1700000000.0, "seconds_since_heartbeat": 42.0, "alive": False},
    ],
    "errors": 0,
}
CLIENTS = {
    "clients": {
        "site-1": {"ok": True, "result": {"status": {"app": "a", "run": 1, "status": "started", "task": "train"}}},
        "site-2": {"ok": False, "error": "no reply"},
    }
}


def shown(outcome: Outcome) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=160, highlight=False).print(render(outcome))
    return buffer.getvalue()


def test_json_has_the_status_fields_at_the_top_level() -> None:
    obj = json.loads(to_json(Outcome("check_status", "check_status server", data=STATUS)))
    assert obj["command"] == "check_status server" and obj["ok"] is True
    for key in ("engine_status", "app_name", "run_number", "current_round", "num_rounds"):
        assert obj[key] == STATUS[key]
    assert [(c["site"], c["last_heartbeat"]) for c in obj["registered_clients"]] == [
        ("site-1", 1700000000.5),
        ("site-2", 1700000000.0),
    ]


def test_json_of_plain_results_and_errors() -> None:
    assert json.loads(to_json(Outcome("list_apps", "list_apps", data=["x"]))) == {
        "result": ["x"],
        "command": "list_apps",
        "ok": True,
    }
    failed = json.loads(to_json(Outcome("abort", "abort all", ok=False, error="boom")))
    assert failed == {"command": "abort all", "ok": False, "error": "boom"}
    assert "\n" not in to_json(Outcome("x", "x", data={"text": "a\nb"}))


def test_server_status_panel() -> None:
    text = shown(Outcome("check_status", "check_status server", data=STATUS))
    assert "Engine status" in text and "started" in text and "round 3" in text
    assert re.search(r"Rounds done / num_rounds +3 / 10", text) and re.search(r"Current round +3", text)
    assert "site-1" in text and "(0.4 s ago)" in text and "(42.0 s ago)" in text  # one decimal: ages line up
    assert "yes" in text and "no" in text


def test_server_status_names_the_active_server_and_counts_the_standbys() -> None:
    active = {"id": "vm:41:ab", "host": "vm", "pid": 41, "since": 1700000000.0, "epoch": 2}
    text = shown(Outcome("check_status", "check_status server", data={**STATUS, "active_server": active,
                                                                       "standby_servers": 1}))  # fmt: skip
    assert re.search(r"Active server +vm pid 41 \(since \d\d:\d\d:\d\d, takeover 2\)", text)
    assert re.search(r"Standby servers +1", text)
    assert "Active server" not in shown(Outcome("check_status", "check_status server", data=STATUS))


def test_a_finished_run_shows_its_rounds_done_not_its_last_round() -> None:
    finished = {**STATUS, "engine_status": "stopped", "phase": "finished", "current_round": 9, "rounds_done": 10}
    text = shown(Outcome("check_status", "check_status server", data=finished))
    assert re.search(r"Rounds done / num_rounds +10 / 10", text)
    assert "Current round" not in text and "9 / 10" not in text


def test_no_registered_client_is_a_sentence_not_a_table_row() -> None:
    text = shown(Outcome("check_status", "check_status server", data={**STATUS, "registered_clients": []}))
    assert "no client is registered" in text and "Registered clients" not in text and "none" not in text
    text = shown(Outcome("check_status", "check_status client", data={"clients": {}}))
    assert "no client to ask (none is registered)" in text and "│" not in text


def test_client_table_shows_no_reply_and_the_task() -> None:
    outcome = Outcome("check_status", "check_status client", ok=False, data=CLIENTS, error="x")
    text = shown(outcome)
    assert "no reply" in text and "started (train)" in text
    assert "Error:" not in text  # the table already says which site failed
    assert failed_sites(CLIENTS) == {"site-2": "no reply"}
    header = next(line for line in text.splitlines() if "Site" in line)
    assert "Result" not in header and "Status" in header  # check_status answers with a status only


def test_other_commands_keep_their_result_column() -> None:
    data = {"clients": {"site-1": {"ok": True, "result": {"message": "deployed a", "status": {"status": "x"}}}}}
    text = shown(Outcome("deploy_app", "deploy_app a client", data=data))
    assert "Result" in text and "deployed a" in text


def test_brackets_in_replies_are_not_taken_for_markup() -> None:
    data = {"server": "weights [[1, 2]] saved", "clients": {"s": {"ok": False, "error": "[bold]x[/bold]"}}}
    text = shown(Outcome("deploy_app", "deploy_app a all", data=data))
    assert "[[1, 2]]" in text and "[bold]x[/bold]" in text


def test_errors_are_red_lines() -> None:
    assert "Error: the server did not answer" in shown(Outcome("x", "x", ok=False, error="the server did not answer"))


def test_lists_and_key_values() -> None:
    assert "no app is staged" in shown(Outcome("list_apps", "list_apps", data=[]))
    assert "hello" in shown(Outcome("list_apps", "list_apps", data=["hello"]))
    assert "no errors" in shown(Outcome("show_errors", "show_errors", data=[]))
    stats = shown(Outcome("show_stats", "show_stats", data={"phase": "round 2", "num_rounds": 10}))
    assert "phase" in stats and "round 2" in stats


def test_heartbeat_cell() -> None:
    assert heartbeat({}) == "-"
    assert heartbeat({"last_heartbeat": 0.0, "seconds_since_heartbeat": 1.5}).endswith("(1.5 s ago)")
