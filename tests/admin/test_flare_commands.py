"""FLARE 2.0's remaining admin commands, end to end through `fl-broker admin -c` on an in-process
federation: the read-only workspace commands on the server and on a site, download_model, restart,
reset_errors, get_run_number and set_timeout."""

from __future__ import annotations

import numpy as np

from tests.admin.conftest import Federation, run_admin

FLOW = "upload_app hello-numpy-sag; set_run_number 1; deploy_app hello-numpy-sag all; start_app all"
FINAL = np.arange(1, 10, dtype=np.float32).reshape(3, 3) + 10


def finished_run(fed: Federation) -> None:
    fed.stage_app()
    assert run_admin(fed.url, fed.root, FLOW).code == 0
    fed.wait_stopped()


def test_workspace_commands_on_the_server_and_on_a_site(fed: Federation) -> None:
    finished_run(fed)
    config = "run_1/app_site-2/config/config_fed_client.json"
    lines = f"pwd server; ls server; ls site-1 -l run_1; grep site-2 -n -i TRAIN {config}; head server -n 1 engine.json"
    pwd, ls_server, ls_site, grep, head = run_admin(fed.url, fed.root, lines, json_mode=True).objects()
    assert pwd["result"] == str((fed.root / "server").resolve())
    assert {"engine.json", "run_1/", "transfer/"} <= set(ls_server["result"].splitlines())
    assert any(line.endswith(" app_site-1/") and line.startswith("d") for line in ls_site["result"].splitlines())
    assert (
        grep["result"].splitlines()
        == [
            line
            for line in (
                f"{n}:{text}" for n, text in enumerate((fed.root / "site-2" / config).read_text().splitlines(), 1)
            )
            if "train" in line.lower().split(":", 1)[1]
        ]
        != []
    )
    assert head["result"].startswith('{"run_number": 1')


def test_workspace_commands_refuse_to_leave_the_workspace(fed: Federation) -> None:
    (fed.root / "secret.txt").write_text("not for the admin\n")
    (fed.root / "site-1" / "link").symlink_to(fed.root / "secret.txt")
    lines = "cat server ../secret.txt; cat site-1 link; cat site-1 ../site-2/log.txt; ls site-9; ls -l server"
    out = run_admin(fed.url, fed.root, lines, json_mode=True)
    leaving, link, other_site, unknown, bad = out.objects()
    assert leaving["error"] == "refused: ../secret.txt leaves the workspace; give a path inside it, relative to it"
    assert link["error"] == "site-1: refused: link is a link to outside the workspace"
    assert other_site["error"].startswith("site-1: refused: ../site-2/log.txt leaves the workspace")
    assert unknown["error"] == "site-9 is not registered (the target is server or a registered site)"
    assert bad["error"].startswith("invalid site name '-l'") and bad["error"].endswith(
        "usage: ls server | SITE [-a] [-l] [PATH]"
    )
    assert "not for the admin" not in out.text and out.code == 1


def test_workspace_commands_for_people(fed: Federation) -> None:
    (fed.root / "server" / "notes.txt").write_text("[bold]not markup[/bold]\n")
    out = run_admin(fed.url, fed.root, "cat server notes.txt; grep server nothing notes.txt; head site-1 nope")
    assert "[bold]not markup[/bold]" in out.text and "(nothing)" in out.text
    assert "site-1: nope: no such file or folder in the workspace" in out.text


def test_download_model_saves_the_global_model_in_the_admin_workspace(fed: Federation) -> None:
    finished_run(fed)
    (obj,) = run_admin(fed.url, fed.root, "download_model", json_mode=True).objects()
    folder = fed.root.resolve() / "admin" / "download" / "run_1" / "models"
    assert obj["ok"] and obj["run"] == 1 and obj["folder"] == str(folder)
    np.testing.assert_array_equal(np.load(folder / "server.npy"), FINAL)
    (npy,) = [f for f in obj["files"] if f["name"] == "server.npy"]
    assert npy["array"] == "float32 3x3" and "[[11. 12. 13.]" in npy["values"]
    people = run_admin(fed.url, fed.root, "download_model 1").text
    assert "run 1: the global model is saved in" in people and "float32 3x3" in people and "[17. 18. 19.]]" in people
    missing = run_admin(fed.url, fed.root, "download_model 7; download_model zero", json_mode=True).objects()
    assert (
        missing[0]["error"].startswith("run 7 has no saved model")
        and "usage: download_model [RUN]" in missing[1]["error"]
    )


def test_run_number_errors_and_timeout(fed: Federation) -> None:
    fed.engine.state.add_error("something broke")
    lines = "get_run_number; set_run_number 3; get_run_number; show_errors; reset_errors; show_errors; set_timeout 2.5"
    objects = run_admin(fed.url, fed.root, lines, json_mode=True).objects()
    none, _, three, errors_before, reset, errors_after, timeout = objects
    assert none["run_number"] is None and three["run_number"] == 3
    assert errors_before["result"] == ["something broke"] and reset["result"] == "cleared 1 error"
    assert errors_after["result"] == [] and timeout["result"] == "commands now wait up to 2.5 s for the server's reply"
    bad = run_admin(fed.url, fed.root, "set_timeout 0; set_timeout soon", json_mode=True).objects()
    assert all("give a number of seconds above 0 and up to 3600" in o["error"] for o in bad)


def test_restart_is_refused_during_a_run_and_restarts_clients_otherwise(fed: Federation) -> None:
    from tests.support.federation import make_app

    app = make_app(fed.root / "slow", client_args={"sleep_time": 0.5})
    steps = f"upload_app {app}; set_run_number 1; deploy_app app all; start_app all; restart client"
    *_, refused = run_admin(fed.url, fed.root, steps, json_mode=True).objects()
    assert refused["error"].startswith("run 1 is started: abort it first")
    run_admin(fed.url, fed.root, "abort all")
    fed.wait_stopped()
    (restart,) = run_admin(fed.url, fed.root, "restart client site-1", json_mode=True).objects()
    assert restart["clients"]["site-1"]["result"]["message"] == "restarting"
    worker = fed.workers["site-1"]
    assert worker.restart_requested.is_set() and worker.stopped.is_set()  # its program starts it again
    assert not fed.workers["site-2"].stopped.is_set()
