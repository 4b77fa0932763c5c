"""The server's control requests and replies, with real workers, on the in-process transport."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from fl_broker.apps.archive import pack_app
from fl_broker.apps.workspace import Workspace
from fl_broker.errors import RemoteError
from fl_broker.protocol.control import RequestClient
from fl_broker.server.engine import EngineOptions, ServerEngine
from fl_broker.transport import Delivery
from fl_broker.transport.memory import MemoryBroker
from fl_broker.wire import names
from fl_broker.wire.envelope import Envelope, encode_envelope
from fl_broker.wire.messages import DXO, DataKind
from tests.support.inprocess import APP, InProcessFederation
from workers.worker import ClientWorker, worker_workspace

Federation = InProcessFederation


@pytest.fixture
def fed(tmp_path):
    federation = Federation(tmp_path, ["site-1", "site-2"])
    federation.wait_registered(2)
    yield federation
    federation.close()


def upload(fed: Federation, app_dir: Path = APP, name: str = "hello-numpy-sag"):
    return fed.call("upload_app", app=name, archive=pack_app(app_dir))


def test_whole_flow_with_replies(fed):
    assert "uploaded" in upload(fed)
    assert fed.call("list_apps") == ["hello-numpy-sag"]
    reply = fed.call("set_run_number", run=1)
    assert reply["server"] == "Created a new run folder: run_1"
    assert {s: a["result"]["message"] for s, a in reply["clients"].items()} == {
        "site-1": "Created a new run folder: run_1",
        "site-2": "Created a new run folder: run_1",
    }
    assert "exists already" in fed.call("set_run_number", run=1)["server"]
    reply = fed.call("deploy_app", app="hello-numpy-sag", target="all")
    assert "deployed" in reply["server"] and all(a["ok"] for a in reply["clients"].values())
    reply = fed.call("start_app", target="all")
    assert "started" in reply["server"] and all(a["ok"] for a in reply["clients"].values())
    status = fed.wait_stopped()
    assert status["phase"] == "finished" and status["num_rounds"] == 10
    assert status["current_round"] is None and status["rounds_done"] == 10  # finished: no round is current
    assert status["app_name"] == "hello-numpy-sag" and status["run_number"] == 1
    assert [c["site"] for c in status["registered_clients"]] == ["site-1", "site-2"]
    final = np.load(fed.root / "server" / "run_1" / "models" / "server.npy")
    np.testing.assert_array_equal(final, np.arange(1, 10, dtype=np.float32).reshape(3, 3) + 10)
    clients = fed.call("check_status", target="client")["clients"]
    assert {s: a["result"]["status"]["status"] for s, a in clients.items()} == {
        "site-1": "stopped",
        "site-2": "stopped",
    }


def test_deploy_needs_a_run_number_and_an_uploaded_app(fed):
    with pytest.raises(RemoteError, match="set a run number first"):
        fed.call("deploy_app", app="hello-numpy-sag", target="all")
    fed.call("set_run_number", run=1)
    with pytest.raises(RemoteError, match="app hello-numpy-sag is not uploaded"):
        fed.call("deploy_app", app="hello-numpy-sag", target="all")


def test_clients_start_only_after_the_server(fed):
    upload(fed)
    fed.call("set_run_number", run=1)
    fed.call("deploy_app", app="hello-numpy-sag", target="all")
    with pytest.raises(RemoteError, match="start the server app first"):
        fed.call("start_app", target="client")


def test_broken_config_is_reported_and_the_server_stays_up(fed, tmp_path):
    broken = tmp_path / "broken-app"
    shutil.copytree(APP, broken)
    config_path = broken / "config" / "config_fed_server.json"
    config = json.loads(config_path.read_text())
    config["workflows"][0]["args"]["num_rounds"] = "ten"
    config_path.write_text(json.dumps(config))
    upload(fed, broken, "broken-app")
    fed.call("set_run_number", run=1)
    fed.call("deploy_app", app="broken-app", target="server")
    with pytest.raises(RemoteError, match=r"config_fed_server.json: workflows\[0\]\.args\.num_rounds: expected int"):
        fed.call("start_app", target="server")
    status = fed.call("check_status", target="server")
    assert status["engine_status"] == "stopped" and status["errors"] == 1
    assert "num_rounds" in fed.call("show_errors")[0]


def test_set_run_number_is_refused_while_started_and_abort_ends_the_run(fed, tmp_path):
    slow = tmp_path / "slow-app"
    shutil.copytree(APP, slow)
    client_config = slow / "config" / "config_fed_client.json"
    config = json.loads(client_config.read_text())
    config["executors"][0]["executor"]["args"] = {"sleep_time": 30}
    client_config.write_text(json.dumps(config))
    upload(fed, slow, "slow-app")
    fed.call("set_run_number", run=1)
    fed.call("deploy_app", app="slow-app", target="all")
    fed.call("start_app", target="all")
    with pytest.raises(RemoteError, match="cannot change the run number while the app is started"):
        fed.call("set_run_number", run=2)
    time.sleep(0.3)
    fed.call("abort", target="all")
    status = fed.wait_stopped(timeout=10)
    assert status["phase"] == "aborted"
    fed.call("set_run_number", run=2)  # a new run can start afterwards


def test_unknown_command_and_bad_arguments_are_errors_not_crashes(fed):
    with pytest.raises(RemoteError, match="unknown command 'frobnicate'"):
        fed.call("frobnicate")
    with pytest.raises(RemoteError, match="argument 'run' has the wrong type"):
        fed.call("set_run_number", run="one")
    with pytest.raises(RemoteError, match="target must be server, client or all"):
        fed.call("start_app", target="moon")
    assert fed.call("check_status", target="server")["engine_status"] == "stopped"


def test_shutdown_server_is_refused_while_clients_are_connected(fed):
    with pytest.raises(RemoteError, match="clients are still connected"):
        fed.call("shutdown", target="server")
    reply = fed.call("shutdown", target="client")
    assert all(a["ok"] for a in reply["clients"].values())
    assert fed.call("shutdown", target="server")["server"] == "shutting down"
    assert fed.engine.shutdown_requested.is_set()


def test_a_silent_site_shows_no_reply_and_is_gone_after_the_grace_period(fed):
    fed.workers["site-2"].close()
    reply = fed.call("check_status", target="client")["clients"]
    assert reply["site-2"] == {"ok": False, "error": "no reply"}
    assert reply["site-1"]["ok"]
    time.sleep(1.3)
    rows = {c["site"]: c["alive"] for c in fed.call("check_status", target="server")["registered_clients"]}
    assert rows == {"site-1": True, "site-2": False}


def test_a_client_that_re_registers_replaces_its_session(fed):
    old_session = fed.workers["site-1"].session
    fed.workers["site-1"].close()
    fed.workers["site-1"] = fed.add_worker("site-1")
    deadline = time.monotonic() + 5
    while fed.engine.clients._records["site-1"].session == old_session:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert len(fed.call("check_status", target="server")["registered_clients"]) == 2


def test_only_admin_users_may_send_admin_commands_and_sites_must_be_themselves(tmp_path):
    broker = MemoryBroker.named(f"test-{uuid.uuid4().hex}")
    options = EngineOptions(admin_users=frozenset({"admin"}), enforce_site_users=True)
    engine = ServerEngine(
        workspace=Workspace(tmp_path, "server"), transport=broker.connect(user="server"), options=options
    )
    engine.start()
    admin = RequestClient(broker.connect(user="admin"))
    intruder = RequestClient(broker.connect(user="site-1"))
    try:
        assert admin.call(names.SERVER, "check_status", {"target": "server"}, timeout=5)["engine_status"] == "stopped"
        not_admin = "^Unauthorized: admin command check_status from user 'site-1', but only 'admin' may send it$"
        with pytest.raises(RemoteError, match=not_admin):
            intruder.call(names.SERVER, "check_status", {"target": "server"}, timeout=5)
        not_site_2 = "^Unauthorized: register as site 'site-2' from user 'site-1', but only 'site-2' may send it$"
        with pytest.raises(RemoteError, match=not_site_2):
            intruder.call(names.SERVER, "register", {"site": "site-2", "session": "x"}, timeout=5)
        intruder.call(names.SERVER, "register", {"site": "site-1", "session": "x"}, timeout=5)
        assert engine.clients.alive() == ["site-1"]
    finally:
        admin.close()
        intruder.close()
        engine.close()


def test_a_worker_obeys_only_the_server_login_when_told_to(tmp_path):
    broker = MemoryBroker.named(f"test-{uuid.uuid4().hex}")
    server = broker.connect(user="server")
    server.declare(names.server_topology())
    worker = ClientWorker(
        site="site-2",
        workspace=worker_workspace(tmp_path, "site-2"),
        transport=broker.connect(user="site-2"),
        heartbeat_interval=60,
        server_user="server",
    )
    worker.start()
    intruder = broker.connect(user="site-1")
    try:
        intruder.publish(names.CONTROL_EXCHANGE, "site-2", b"anything", reply_to=None)
        intruder.publish(names.DEFAULT_EXCHANGE, names.task_queue("site-2"), b"a forged task")
        deadline = time.monotonic() + 5
        while len(broker.messages(names.DEAD_LETTER_QUEUE)) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        reasons = [m.headers[names.REJECT_REASON_HEADER] for m in broker.messages(names.DEAD_LETTER_QUEUE)]
        assert any("request from user 'site-1'" in r for r in reasons)
        settled = []
        forged = Delivery(body=b"a forged task", exchange="", routing_key="fl.task.site-2", user_id="site-1")
        forged.settler = lambda action, reason: settled.append((action, reason))
        worker._on_task(forged)
        assert settled == [("reject", "task from user 'site-1', but only 'server' may send it")]
    finally:
        worker.close()


def test_results_queued_before_a_restart_are_kept_for_the_resumed_run(tmp_path):
    broker = MemoryBroker.named(f"test-{uuid.uuid4().hex}")
    site = broker.connect(user="site-1")
    site.declare(names.server_topology())
    run_dir = tmp_path / "server" / "run_1"
    shutil.copytree(APP, run_dir / "app_server")
    (run_dir / "fl_app.txt").write_text("hello-numpy-sag\n")
    state = {"run_number": 1, "app_name": "hello-numpy-sag", "running": True, "run_sites": ["site-1"]}
    (tmp_path / "server" / "engine.json").write_text(json.dumps(state))
    shareable = DXO(DataKind.WEIGHTS, {"numpy_key": np.ones((3, 3), np.float32)}).to_shareable()
    shareable.task_id, shareable.cookie_jar = "run1-train-round0", {"contribution_round": 0}
    body = encode_envelope(Envelope("result", 1, {"site": "site-1", "round": 0}, shareable))
    site.publish(names.RESULT_EXCHANGE, names.SERVER, body)  # sent before the server came back

    engine = ServerEngine(workspace=Workspace(tmp_path, "server"), transport=broker.connect(user="server"))
    engine.start()
    try:
        deadline = time.monotonic() + 5
        while broker.queue_depth(names.SERVER_RESULT_QUEUE):  # consumed ...
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)
        assert broker.messages(names.DEAD_LETTER_QUEUE) == []  # ... and kept for the resumed run
        assert engine.status.value == "started" and engine.run_number == 1
    finally:
        engine.close()
        site.close()
