"""Every command, and every failure path, against an in-process federation through `fl-broker admin -c`."""

from __future__ import annotations

import re
import time

import numpy as np

from fl_broker import errors
from fl_broker.wire import names
from tests.admin.conftest import Federation, run_admin

FLOW = "upload_app hello-numpy-sag; set_run_number 1; deploy_app hello-numpy-sag all; start_app all"
FINAL = np.arange(1, 10, dtype=np.float32).reshape(3, 3) + 10


def test_the_whole_job_in_json_mode(fed: Federation) -> None:
    fed.stage_app()
    run = run_admin(fed.url, fed.root, FLOW, json_mode=True)
    assert run.code == 0, run.text
    upload, set_run, deploy, start = run.objects()
    assert upload["ok"] and "uploaded app hello-numpy-sag" in upload["result"]
    assert set_run["server"] == "Created a new run folder: run_1"
    assert set(set_run["clients"]) == {"site-1", "site-2"}
    assert deploy["command"] == "deploy_app hello-numpy-sag all" and all(a["ok"] for a in deploy["clients"].values())
    assert "started" in start["server"]
    fed.wait_stopped()
    (status,) = run_admin(fed.url, fed.root, "check_status server", json_mode=True).objects()
    assert status["engine_status"] == "stopped" and status["app_name"] == "hello-numpy-sag"
    assert status["run_number"] == 1 and status["num_rounds"] == 10
    assert status["current_round"] is None and status["rounds_done"] == 10  # finished: no round is current
    assert [c["site"] for c in status["registered_clients"]] == ["site-1", "site-2"]
    assert all(isinstance(c["last_heartbeat"], float) for c in status["registered_clients"])
    np.testing.assert_array_equal(np.load(fed.root / "server" / "run_1" / "models" / "server.npy"), FINAL)


def test_tables_for_people(fed: Federation) -> None:
    fed.stage_app()
    run = run_admin(fed.url, fed.root, FLOW + "; check_status client; list_apps; show_stats server")
    assert run.code == 0, run.text
    assert "Created a new run folder: run_1" in run.text
    assert "site-1" in run.text and "site-2" in run.text and "Staged apps" in run.text
    fed.wait_stopped()
    run = run_admin(fed.url, fed.root, "check_status server; sys_info server; sys_info client; show_errors server")
    assert run.code == 0, run.text
    assert re.search(r"Rounds done / num_rounds +10 / 10", run.text) and "Current round" not in run.text
    assert "Registered clients" in run.text and "hello-numpy-sag" in run.text
    assert "no errors" in run.text and "sys_info: clients" in run.text


def test_upload_accepts_a_path_and_refuses_a_missing_folder(fed: Federation) -> None:
    from tests.support.inprocess import APP

    run = run_admin(fed.url, fed.root, f"upload_app {APP}; upload_app nope", json_mode=True)
    ok, missing = run.objects()
    assert ok["ok"] and (fed.root / "server" / "transfer" / "hello-numpy-sag").is_dir()
    assert not missing["ok"] and "no app folder 'nope'" in missing["error"]
    assert run.code == 1


def test_run_number_rules(fed: Federation) -> None:
    run = run_admin(fed.url, fed.root, "set_run_number 2; set_run_number 2; delete_run_number 7; delete_run_number 2")
    assert "Created a new run folder: run_2" in run.text and "run_2 exists already" in run.text
    assert "run_7 does not exist" in run.text and "deleted run_2" in run.text
    assert run.code == 1


def test_deploy_needs_a_run_number_then_an_uploaded_app(fed: Federation) -> None:
    run = run_admin(
        fed.url, fed.root, "deploy_app hello-numpy-sag all; set_run_number 1; deploy_app hello-numpy-sag all"
    )
    assert "set a run number first" in run.text and "app hello-numpy-sag is not uploaded" in run.text
    assert run.code == 1


def test_clients_start_only_after_the_server(fed: Federation) -> None:
    fed.stage_app()
    run = run_admin(
        fed.url,
        fed.root,
        "upload_app hello-numpy-sag; set_run_number 1; deploy_app hello-numpy-sag all; start_app client",
    )
    assert "start the server app first" in run.text and run.code == 1


def test_a_silent_site_shows_no_reply_and_fails_the_command(fed: Federation) -> None:
    fed.workers["site-2"]._requests.stop()  # alive (heartbeats) but deaf to control requests
    run = run_admin(fed.url, fed.root, "check_status client")
    assert "no reply" in run.text and run.code == 1
    (obj,) = run_admin(fed.url, fed.root, "check_status client", json_mode=True).objects()
    assert obj["clients"]["site-2"] == {"ok": False, "error": "no reply"} and obj["clients"]["site-1"]["ok"]


def test_abort_and_abort_task_are_idempotent(fed: Federation) -> None:
    run = run_admin(fed.url, fed.root, "abort all; abort all; abort_task site-1; abort_task site-1", json_mode=True)
    assert run.code == 0, run.text
    first, second, task1, task2 = run.objects()
    assert first["server"] == second["server"] == "no app is running"
    assert task1["clients"]["site-1"]["result"]["message"] == "no task is running"


def test_remove_client(fed: Federation) -> None:
    run = run_admin(fed.url, fed.root, "remove_client site-9; remove_client site-1")
    assert "site-9 is not registered" in run.text and "removed site-1" in run.text


def test_shutdown_in_order_counts_confirmations_as_yes(fed: Federation) -> None:
    run = run_admin(fed.url, fed.root, "shutdown server; shutdown client; shutdown server", json_mode=True)
    refused, clients, server = run.objects()
    assert not refused["ok"] and "clients are still connected" in refused["error"]
    assert all(a["ok"] for a in clients["clients"].values()) and server["server"] == "shutting down"
    assert fed.engine.shutdown_requested.is_set() and all(w.stopped.is_set() for w in fed.workers.values())


def test_unknown_command_suggests_the_closest(fed: Federation) -> None:
    run = run_admin(fed.url, fed.root, "chek_status server")
    assert "unknown command 'chek_status'" in run.text and "check_status" in run.text and run.code == 1


def test_wrong_arguments_show_the_usage(fed: Federation) -> None:
    run = run_admin(fed.url, fed.root, "set_run_number zero; deploy_app; check_status everywhere", json_mode=True)
    errors_ = [o["error"] for o in run.objects()]
    assert "usage: set_run_number N" in errors_[0]
    assert "usage: deploy_app APP server | client [SITES] | all" in errors_[1]
    assert "usage: check_status server | client [SITES]" in errors_[2]


def test_local_commands(fed: Federation) -> None:
    run = run_admin(fed.url, fed.root, "lpwd; info; help; help deploy_app; help nope", json_mode=True)
    lpwd, info, help_all, help_one, help_bad = run.objects()
    assert lpwd["result"] == str(fed.root.resolve() / "admin" / "transfer")
    assert info["user"] == "guest" and "in-process broker" in info["broker"]
    assert "watch" in help_all and help_one["result"].startswith("deploy_app APP")
    assert not help_bad["ok"] and run.code == 1


def test_bye_stops_a_script(fed: Federation) -> None:
    run = run_admin(fed.url, fed.root, "lpwd; bye; chek", json_mode=True)
    assert len(run.objects()) == 1 and run.code == 0


def mute_server(fed: Federation) -> None:
    """The server's control queue keeps a consumer that takes every request and answers none (a hung server)."""
    fed.engine._requests.stop()
    fed.connect("hung").consume(names.SERVER_CONTROL_QUEUE, lambda delivery: None)


def test_a_silent_server_gives_a_clear_message_after_the_timeout(fed: Federation) -> None:
    mute_server(fed)
    run = run_admin(fed.url, fed.root, "check_status server", timeout=0.5)
    assert "the server did not answer within 0.5 s (is it running?)" in run.text
    assert "Traceback" not in run.text and run.code == 1


def test_a_stopped_server_is_reported_at_once_not_after_the_timeout(fed: Federation) -> None:
    fed.engine._requests.stop()  # its queue is still there, and nothing consumes it
    started = time.monotonic()
    run = run_admin(fed.url, fed.root, "check_status server; list_apps", timeout=10)
    assert time.monotonic() - started < 2
    assert run.text.count("Error: the server is not running") == 2 and run.code == 1


def test_no_server_on_the_broker(tmp_path) -> None:
    run = run_admin("memory://admin-test-empty", tmp_path, "check_status server", timeout=10)
    assert "the server is not running" in run.text and run.code == 1


def test_wrong_credentials_are_one_clear_line(tmp_path, monkeypatch) -> None:
    def refuse(url, options=None):
        raise errors.AuthenticationFailed("amqp://admin:***@host/%2Ffl: ACCESS_REFUSED")

    monkeypatch.setattr("admin.main.connect", refuse)
    run = run_admin("amqp://admin:s3cret@host/%2Ffl", tmp_path, "check_status server")
    assert run.text.strip() == "The broker refused the credentials of user 'admin' (amqp://host vhost /fl)."
    assert run.code == 2 and "s3cret" not in run.text


def test_unreachable_broker(tmp_path, monkeypatch) -> None:
    def away(url, options=None):
        raise errors.ConnectionLost("cannot connect to amqp://admin:s3cret@host/ after 6 attempts")

    monkeypatch.setattr("admin.main.connect", away)
    run = run_admin("amqp://admin:s3cret@host/", tmp_path, "check_status server")
    assert run.text.startswith("Cannot connect to amqp://host vhost /") and "s3cret" not in run.text
    assert run.code == 2


def test_script_file_and_the_cli_entry_point(fed: Federation, tmp_path) -> None:
    from fl_broker.cli import build_parser

    script = tmp_path / "job.txt"
    script.write_text("# a comment\nset_run_number 4\nlist_apps\n")
    args = build_parser().parse_args(
        ["admin", "--workspace", str(fed.root), "--broker", fed.url, "--script", str(script), "--json"]
    )
    import io

    from rich.console import Console

    from admin import main as admin_main

    buffer = io.StringIO()
    assert admin_main.main(args, out=Console(file=buffer, width=200)) == 0
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2 and '"server": "Created a new run folder: run_4"' in lines[0]
    args.script = tmp_path / "missing.txt"
    assert admin_main.main(args, out=Console(file=io.StringIO())) == 1


def test_watch_in_json_mode_prints_one_line(fed: Federation) -> None:
    fed.stage_app()
    run = run_admin(fed.url, fed.root, FLOW + "; watch", json_mode=True)
    assert run.code == 0, run.text
    assert run.objects()[-1]["result"] == "run 1 finished: 10 / 10 rounds"
    assert len(run.text.splitlines()) == 5


def test_no_connection_in_json_mode(tmp_path, monkeypatch) -> None:
    def away(url, options=None):
        raise errors.ConnectionLost("cannot connect")

    monkeypatch.setattr("admin.main.connect", away)
    (obj,) = run_admin("amqp://u:p@h/", tmp_path, "lpwd", json_mode=True).objects()
    assert obj["ok"] is False and obj["command"] == "connect" and "Cannot connect" in obj["error"]


def test_upload_refuses_an_app_with_links(fed: Federation) -> None:
    fed.stage_app()
    app = fed.root / "admin" / "transfer" / "hello-numpy-sag"
    (app / "resources" / "escape").symlink_to("/etc/passwd")
    (obj,) = run_admin(fed.url, fed.root, "upload_app hello-numpy-sag", json_mode=True).objects()
    assert not obj["ok"] and "contains links (resources/escape)" in obj["error"]
    assert not (fed.root / "server" / "transfer" / "hello-numpy-sag").exists()


def test_bad_app_names_are_refused_before_sending(fed: Federation, tmp_path) -> None:
    folder = tmp_path / "bad name!"
    folder.mkdir()
    (obj,) = run_admin(fed.url, fed.root, f"upload_app '{folder}'", json_mode=True).objects()
    assert not obj["ok"] and "invalid app name" in obj["error"]


def test_upload_of_a_bare_name_points_at_the_repository_app(fed: Federation, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "apps" / "my-app").mkdir(parents=True)
    (missing,) = run_admin(fed.url, fed.root, "upload_app my-app", json_mode=True).objects()
    assert missing["error"].endswith("(nor at that path); did you mean: upload_app apps/my-app")
    (other,) = run_admin(fed.url, fed.root, "upload_app other", json_mode=True).objects()
    assert other["error"].endswith("(nor at that path); copy the app folder there, or give its path")


def test_one_scripted_command_prints_its_answer_only(fed: Federation) -> None:
    one = run_admin(fed.url, fed.root, "lpwd")
    assert one.text.strip() == str(fed.root.resolve() / "admin" / "transfer")
    several = run_admin(fed.url, fed.root, "lpwd; list_apps")
    assert several.text.startswith("> lpwd\n") and "\n> list_apps\n" in several.text
    assert "Connected to" not in one.text + several.text and "Type help" not in one.text + several.text
