"""Run control: starting the server side of a run, abort, failure, the state a restart finds, rejoining."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest

from fl_broker.apps.workspace import Workspace
from fl_broker.errors import ConfigError
from fl_broker.protocol.control import BadRequest, Request, RequestServer
from fl_broker.server.commands.runs import RunCommands
from fl_broker.server.fanout import SiteFanout
from fl_broker.server.runs import RunControl
from fl_broker.server.sessions import ClientRegistry
from fl_broker.server.state import EngineState, EngineStatus
from fl_broker.server.task_channel import BrokerTaskChannel
from fl_broker.transport.memory import MemoryBroker
from fl_broker.wire import names

WORKFLOW = """
from fl_broker.fl.events import EventType
from fl_broker.fl.workflow import Workflow


class UntilAborted(Workflow):
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def run(self, runtime):
        runtime.fire(EventType.TRAINING_STARTED, num_rounds=3, start_round=1)
        if self.fail:
            raise RuntimeError("boom")
        runtime.abort_signal.wait(30)
        runtime.fire(EventType.RUN_ABORTED, 1)
"""

FIRST_LIVE = """
import json
from pathlib import Path

from fl_broker.fl.workflow import Workflow


class FirstLive(Workflow):
    def run(self, runtime):
        while not runtime.live_clients() and not runtime.abort_signal.triggered:
            runtime.abort_signal.wait(0.005)
        Path(runtime.context.run_dir, "first_live.json").write_text(json.dumps(runtime.live_clients()))
"""


def deploy(workspace: Workspace, run: int, workflow_args: dict | None = None, *, slow_import: bool = False) -> None:
    app = workspace.app_dir(run)
    (app / "custom").mkdir(parents=True)
    (app / "config").mkdir()
    slow = "import time\ntime.sleep(0.5)  # loading the app takes a while\n" if slow_import else ""
    (app / "custom" / "until_aborted.py").write_text(slow + WORKFLOW)
    config = {"format_version": 2, "workflows": [{"id": "w", "path": "until_aborted.UntilAborted", "args": {}}]}
    config["workflows"][0]["args"] = workflow_args or {}
    (app / "config" / "config_fed_server.json").write_text(json.dumps(config))


class Server:
    """RunControl with its real collaborators on an in-process broker."""

    def __init__(self, root: Path) -> None:
        self.broker = MemoryBroker.named(f"test-{uuid.uuid4().hex}")
        transport = self.broker.connect(user="server")
        transport.declare(names.server_topology())
        self.workspace = Workspace(root, "server")
        self.workspace.home.mkdir(parents=True)
        self.state = EngineState(self.workspace.home / "engine.json")
        self.clients = ClientRegistry(grace=30)
        self.sites = SiteFanout(transport, self.clients, timeout=2, run=lambda: self.state.run_number)
        self.sites.start()
        self.shutting_down = False
        self.runs = RunControl(
            state=self.state,
            workspace=self.workspace,
            channel=BrokerTaskChannel(transport),
            clients=self.clients,
            sites=self.sites,
            hooks=[],
            shutting_down=lambda: self.shutting_down,
        )

    def use(self, run: int, app: str = "app") -> None:
        self.state.run_number, self.state.app_name = run, app

    def saved(self) -> dict:
        return json.loads((self.workspace.home / "engine.json").read_text())

    def wait_status(self, status: EngineStatus) -> None:
        deadline = time.monotonic() + 10
        while self.state.status != status:
            assert time.monotonic() < deadline, f"status is {self.state.status}, not {status}"
            time.sleep(0.02)


@pytest.fixture
def server(tmp_path) -> Server:
    server = Server(tmp_path)
    yield server
    server.runs.stop("test over")
    server.runs.join(5)
    server.sites.close()


def test_nothing_starts_before_an_app_is_deployed(server):
    with pytest.raises(BadRequest, match="deploy an app to the server first"):
        server.runs.start_server_app()
    assert server.runs.abort() == "no app is running"


def test_a_run_starts_refuses_a_second_start_and_ends_when_aborted(server):
    deploy(server.workspace, 1)
    server.use(1)
    assert server.runs.start_server_app() == "started app (run_1)"
    assert server.state.status == EngineStatus.STARTED and server.saved()["running"] is True
    with pytest.raises(BadRequest, match="already started"):
        server.runs.start_server_app()
    deadline = time.monotonic() + 5
    while server.runs.progress.phase != "waiting for clients":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert (server.runs.progress.start_round, server.runs.progress.current_round) == (1, 1)
    assert server.runs.abort() == "abort requested"
    server.wait_status(EngineStatus.STOPPED)
    server.runs.join(5)
    assert server.runs.progress.phase == "aborted"
    assert server.saved()["running"] is False


def test_a_broken_app_does_not_start_and_its_error_is_kept(server):
    deploy(server.workspace, 1, {"fail": "yes"})
    server.use(1)
    with pytest.raises(ConfigError, match=r"workflows\[0\]\.args\.fail: expected bool"):
        server.runs.start_server_app()
    assert server.state.status == EngineStatus.STOPPED
    assert "fail" in server.state.errors()[0]


def test_a_failing_workflow_ends_the_run_as_failed(server):
    deploy(server.workspace, 1, {"fail": True})
    server.use(1)
    server.runs.start_server_app()
    server.runs.join(5)
    assert server.state.status == EngineStatus.STOPPED
    assert server.runs.progress.phase == "failed"
    assert server.state.errors() == ["run 1: RuntimeError: boom"]


def test_a_run_stopped_by_a_server_shutdown_stays_marked_running_for_the_restart(server):
    deploy(server.workspace, 1)
    server.use(1)
    server.runs.start_server_app()
    server.shutting_down = True
    server.runs.stop("server shutting down")
    server.runs.join(5)
    assert server.state.status == EngineStatus.STOPPED
    assert server.saved()["running"] is True


def test_an_abort_asked_while_the_app_loads_is_kept(server):
    deploy(server.workspace, 1, slow_import=True)
    server.use(1)
    starter = threading.Thread(target=server.runs.start_server_app)
    starter.start()
    server.wait_status(EngineStatus.STARTING)
    assert server.runs.abort() == "abort requested"
    starter.join(10)
    server.runs.join(5)
    assert server.runs.progress.phase == "aborted"
    assert server.state.status == EngineStatus.STOPPED


def serve_site(server: Server, site: str, calls: list[str]) -> None:
    transport = server.broker.connect(user=site)
    transport.declare(names.site_topology(site))

    def handler(request: Request) -> dict:
        calls.append(request.command)
        return {"status": {"status": "started", "run": request.args.get("run"), "seq": 99}}

    RequestServer(transport, names.site_control_queue(site), {"deploy_app": handler, "start_app": handler}).start()


def test_a_restarted_site_of_the_running_run_is_deployed_and_started_again(server):
    deploy(server.workspace, 1)
    server.use(1)
    server.state.run_sites = {"site-1"}
    calls: list[str] = []
    serve_site(server, "site-1", calls)
    server.runs.start_server_app()
    server.runs.maybe_rejoin("site-1", {"status": "started", "run": 1})  # it runs the app: nothing to do
    server.runs.maybe_rejoin("site-2", {"status": "stopped"})  # not a site of this run
    time.sleep(0.2)
    assert calls == []
    server.runs.maybe_rejoin("site-1", {"status": "stopped", "run": None})
    deadline = time.monotonic() + 5
    while calls != ["deploy_app", "start_app"]:
        assert time.monotonic() < deadline, calls
        time.sleep(0.02)


def test_a_workflow_first_sees_every_site_that_start_app_started_not_the_quickest(server):
    # Round 0 of a run must not begin with whichever sites answered start_app first: with min_clients 3 of
    # 4 sites, a 4th site a moment slower used to miss round 0 (and secure aggregation's masks with it).
    app = server.workspace.app_dir(1)
    (app / "custom").mkdir(parents=True)
    (app / "config").mkdir()
    (app / "custom" / "first_live.py").write_text(FIRST_LIVE)
    config = {"format_version": 2, "workflows": [{"id": "w", "path": "first_live.FirstLive", "args": {}}]}
    (app / "config" / "config_fed_server.json").write_text(json.dumps(config))
    server.use(1)
    for site, delay in (("site-1", 0.0), ("site-2", 0.0), ("site-3", 0.6)):
        server.clients.register(site, "s", {"status": "stopped", "run": None})
        slow_site(server, site, delay)
    commands = RunCommands(
        state=server.state,
        clients=server.clients,
        sites=server.sites,
        runs=server.runs,
        shutdown_requested=threading.Event(),
        restart_requested=threading.Event(),
    )
    server.runs.start_server_app()
    answers = commands._start_clients(["site-1", "site-2", "site-3"])
    assert all(answer["ok"] for answer in answers.values()), answers
    server.runs.join(5)
    assert json.loads((server.workspace.run_dir(1) / "first_live.json").read_text()) == ["site-1", "site-2", "site-3"]


def slow_site(server: Server, site: str, delay: float) -> None:
    """A site that answers start_app after `delay` seconds, as started for the run it was asked to start."""
    transport = server.broker.connect(user=site)
    transport.declare(names.site_topology(site))

    def start(request: Request) -> dict:
        time.sleep(delay)
        return {"status": {"status": "started", "run": request.args.get("run"), "seq": 1}}

    RequestServer(transport, names.site_control_queue(site), {"start_app": start}).start()
