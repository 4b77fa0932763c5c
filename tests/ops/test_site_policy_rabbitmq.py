"""Site-side policy with provisioned logins on a real node: a site refuses apps that its policy does not allow
(the admin sees why), and the executors a worker runs cannot find the site's broker password."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fl_broker.cli.flow import run_job, shutdown_all, wait_for_clients
from fl_broker.protocol.control import RequestClient
from fl_broker.transport import connect
from tests.support.processes import APP, ROOT, assert_exited_cleanly, spawn

pytestmark = pytest.mark.rabbitmq

# The app's custom/env_probe.py.
PROBE = '''
import json, os, subprocess, sys

from fl_broker.fl.numpy_components import NPTrainer


class EnvProbe(NPTrainer):
    """Looks for the broker password wherever code in the worker's process easily could, then trains."""

    def execute(self, task_name, shareable, context, abort_signal):
        child = subprocess.run(["sh", "-c", "env; cat /proc/$PPID/environ /proc/$PPID/cmdline"], capture_output=True)
        seen = {
            "environ": dict(os.environ),
            "proc": [open(f"/proc/self/{n}", "rb").read().decode("latin-1") for n in ("environ", "cmdline")],
            "argv": list(sys.argv) + list(getattr(sys, "orig_argv", [])),
            "child": child.stdout.decode("latin-1"),
        }
        (context.run_dir / "probe.json").write_text(json.dumps(seen))
        return super().execute(task_name, shareable, context, abort_signal)
'''


def _probe_app(tmp_path: Path) -> Path:
    app = tmp_path / "env-probe"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    (app / "custom").mkdir()
    (app / "custom" / "env_probe.py").write_text(PROBE)
    config = app / "config" / "config_fed_client.json"
    config.write_text(config.read_text().replace("fl_broker.fl.numpy_components.NPTrainer", "env_probe.EnvProbe"))
    return app


def test_executors_cannot_find_the_broker_password(provisioned, processes, tmp_path):
    ws = tmp_path / "ws"
    processes.append(spawn(ws, "server", env=provisioned.env("server")))
    # site-1 as systemd runs it (URL in its env file); site-2 with the URL on its command line.
    site1 = {**provisioned.env("site-1"), "PROBE_MARKER": "visible"}
    processes.append(spawn(ws, "worker", "--site", "site-1", "--heartbeat-interval", "1", env=site1))
    site2 = {k: v for k, v in provisioned.env("site-2").items() if k != "FL_BROKER_URL"}
    processes.append(spawn(ws, "worker", "--site", "site-2", "--heartbeat-interval", "1",
                           broker=provisioned.url("site-2"), env={**site2, "PROBE_MARKER": "visible"}))  # fmt: skip
    admin = RequestClient(connect(provisioned.url("admin")))
    try:
        wait_for_clients(admin, 2, timeout=60, on_status=lambda s: None)
        assert run_job(admin, _probe_app(tmp_path), run=1, on_status=lambda s: None, timeout=120).phase == "finished"
        shutdown_all(admin)
    finally:
        admin.close()
        admin.transport.close()
    assert_exited_cleanly(processes)
    for site in ("site-1", "site-2"):
        password = provisioned.plan.account(site).password
        seen = json.loads((ws / site / "run_1" / "probe.json").read_text())
        assert seen["environ"]["PROBE_MARKER"] == "visible" and "PROBE_MARKER=visible" in seen["child"]
        assert not [name for name in seen["environ"] if name.startswith("FL_")]
        assert password not in json.dumps(seen), site
        assert password not in (ws / site / "log.txt").read_text()


def _admin(ws: Path, env: dict[str, str], commands: str) -> list[dict]:
    command = [sys.executable, "-m", "fl_broker.cli", "admin", "--workspace", str(ws), "--json", "-c", commands]
    done = subprocess.run(command, cwd=ROOT, env={**_clean_env(), **env}, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("FL_")}


def _app_with_custom_code(tmp_path: Path) -> Path:
    """hello-numpy-sag whose trainer is a custom file (the app itself names only built-ins)."""
    app = tmp_path / "hello-numpy-sag"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    (app / "custom").mkdir()
    (app / "custom" / "np_trainer.py").write_text("from fl_broker.fl.numpy_components import NPTrainer\n")
    config = app / "config" / "config_fed_client.json"
    config.write_text(config.read_text().replace("fl_broker.fl.numpy_components.NPTrainer", "np_trainer.NPTrainer"))
    return app


def test_sites_refuse_apps_their_policy_does_not_allow_and_the_admin_sees_why(provisioned, processes, tmp_path):
    ws, allow = tmp_path / "ws", tmp_path / "site-1.apps"
    app = _app_with_custom_code(tmp_path)
    allow.write_text("# apps this site reviewed\n" + "0" * 64 + "  something-else\n")
    processes.append(spawn(ws, "server", env=provisioned.env("server")))
    site1 = {**provisioned.env("site-1"), "FL_APP_ALLOW_LIST": str(allow)}
    site2 = {**provisioned.env("site-2"), "FL_REFUSE_CUSTOM_CODE": "1"}
    for site, env in (("site-1", site1), ("site-2", site2)):
        processes.append(spawn(ws, "worker", "--site", site, "--heartbeat-interval", "1", env=env))
    admin = RequestClient(connect(provisioned.url("admin")))
    try:
        wait_for_clients(admin, 2, timeout=60, on_status=lambda s: None)
        deploy = f"upload_app {app}; set_run_number 1; deploy_app hello-numpy-sag all"
        *_, refused = _admin(ws, provisioned.env("admin"), deploy)
        hashed = subprocess.run([sys.executable, "-m", "workers.app_policy", str(app)], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout  # fmt: skip
        digest = hashed.split()[0]
        assert not refused["ok"] and "deployed hello-numpy-sag to the server" in refused["server"]
        errors = {site: answer["error"] for site, answer in refused["clients"].items()}
        assert errors["site-1"] == f"app 'hello-numpy-sag' refused: its hash {digest} is not in the allow-list {allow}"
        assert errors["site-2"].startswith("app 'hello-numpy-sag' (hash ") and "runs no custom code" in errors["site-2"]
        allow.write_text(allow.read_text() + hashed)  # approve it: no restart needed
        [again] = _admin(ws, provisioned.env("admin"), "deploy_app hello-numpy-sag all")
        assert again["clients"]["site-1"]["ok"] and not again["clients"]["site-2"]["ok"]
        shutdown_all(admin)
    finally:
        admin.close()
        admin.transport.close()
    assert_exited_cleanly(processes)
    assert (
        "refused to deploy hello-numpy-sag for run 1: app 'hello-numpy-sag' refused"
        in (ws / "site-1" / "log.txt").read_text()
    )
    site2_log = (ws / "site-2" / "log.txt").read_text()
    assert "this site refuses apps with custom code" in site2_log and "runs no custom code" in site2_log
