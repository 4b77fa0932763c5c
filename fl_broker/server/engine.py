"""The server engine: staged apps, run number, deployed app, engine status, clients, the running workflow,
and the handlers of every control request (admin commands and client registration/heartbeats)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from fl_broker.apps.archive import check_app_name, pack_app, unpack_app
from fl_broker.apps.loader import load_server_app
from fl_broker.apps.workspace import Workspace
from fl_broker.errors import ConfigError, FlBrokerError, RemoteError, Unauthorized
from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.workflow import Progress, WorkflowRuntime
from fl_broker.ops.sysinfo import system_info
from fl_broker.protocol.control import BadRequest, Request, RequestClient, RequestServer, command_handlers
from fl_broker.protocol.message import check_sender
from fl_broker.server.event_stream import EventStream
from fl_broker.server.sessions import ClientRegistry
from fl_broker.server.task_channel import BrokerTaskChannel
from fl_broker.transport import Transport
from fl_broker.wire import names

log = logging.getLogger(__name__)


class EngineStatus(str, Enum):
    """The server app's life cycle, as check_status reports it."""

    STOPPED = "stopped"
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"


@dataclass(frozen=True)
class EngineOptions:
    """Server tunables."""

    client_grace: float = 30.0  # seconds without a heartbeat before a site counts as gone
    site_timeout: float = 10.0  # how long the server waits for a site's reply to a forwarded command
    # Who may send admin commands (broker logins, checked by RabbitMQ through user_id); None: anyone.
    admin_users: frozenset[str] | None = None
    # Sites must connect with their own login (user_id == site name) to register, heartbeat and send results.
    enforce_site_users: bool = False


CLIENT_COMMANDS = frozenset({"register", "heartbeat"})


class ServerEngine:
    """Owns the server state; every public `cmd_*` method is a control request handler."""

    def __init__(self, *, workspace: Workspace, transport: Transport, options: EngineOptions | None = None) -> None:
        self.workspace = workspace
        self.transport = transport
        self.options = options or EngineOptions()
        self.clients = ClientRegistry(self.options.client_grace)
        self.run_number: int | None = None
        self.app_name: str | None = None  # deployed to the server for run_number
        self.status = EngineStatus.STOPPED
        self.progress = Progress()
        self.errors: list[str] = []
        self.shutdown_requested = threading.Event()
        self._lock = threading.RLock()
        self._abort = Signal()
        self._workflow_thread: threading.Thread | None = None
        self._channel = BrokerTaskChannel(transport, enforce_site_users=self.options.enforce_site_users)
        self._sites: RequestClient | None = None
        self._run_sites: set[str] = set()  # sites that started the client app of the current run
        self._rejoining: set[str] = set()
        self._requests = RequestServer(transport, names.SERVER_CONTROL_QUEUE, self._handlers())
        self._events = EventStream(transport)

    # ---- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Declare the topology and start serving results and control requests."""
        self.workspace.transfer_dir.mkdir(parents=True, exist_ok=True)
        self.transport.declare(names.server_topology())
        self._sites = RequestClient(self.transport)
        # Restore first: a resumed run must be open before results queued for it are consumed, or they
        # would be refused as belonging to no active run.
        self._restore()
        self._channel.start()
        self._requests.start()
        log.info("server ready (workspace %s)", self.workspace.home)

    # ---- persistence: a restarted server picks up where it stopped ----------------------------------

    @property
    def _state_file(self) -> Path:
        return self.workspace.home / "engine.json"

    def _save_state(self) -> None:
        with self._lock:
            state = {
                "run_number": self.run_number,
                "app_name": self.app_name,
                "running": self.status in (EngineStatus.STARTING, EngineStatus.STARTED),
                "run_sites": sorted(self._run_sites),
            }
            # written under the lock too: a slower thread must not replace a newer snapshot with its own
            tmp = self._state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(state), encoding="utf-8")
            os.replace(tmp, self._state_file)

    def _restore(self) -> None:
        try:
            state = json.loads(self._state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self._state_file, exc)
            return
        with self._lock:
            self.run_number = state.get("run_number")
            self.app_name = state.get("app_name")
            self._run_sites = set(state.get("run_sites") or [])
        if state.get("running") and self.run_number and self.app_name:
            log.info("run %d was running when the server stopped: resuming it", self.run_number)
            try:
                self._start_server_app()
            except FlBrokerError as exc:
                log.error("could not resume run %d: %s", self.run_number, exc)

    def close(self) -> None:
        """Abort a running workflow and stop consuming."""
        self._abort.trigger("server shutting down")
        thread = self._workflow_thread
        if thread is not None:
            thread.join(timeout=30)
        self._requests.stop()
        self._channel.stop()
        self._events.close()
        if self._sites is not None:
            self._sites.close()

    def _handlers(self) -> dict[str, Any]:
        return {command: self._guarded(command, handler) for command, handler in command_handlers(self).items()}

    def _guarded(self, command: str, handler: Any) -> Any:
        """`handler`, preceded by the check that the sender's (broker-verified) login may call it."""

        def checked(request: Request) -> Any:
            try:
                if command in CLIENT_COMMANDS:
                    site = request.args.get("site")
                    sender = (
                        (site if isinstance(site, str) else frozenset()) if self.options.enforce_site_users else None
                    )
                    check_sender(request.user_id, sender, f"{command} as site {site!r}")
                else:
                    check_sender(request.user_id, self.options.admin_users, f"admin command {command}")
            except Unauthorized as exc:
                log.warning("refused %s", exc)
                raise
            return handler(request)

        return checked

    # ---- client sessions --------------------------------------------------------------------------

    def cmd_register(self, request: Request) -> dict[str, Any]:
        site = names.check_site_name(request.arg("site", str))
        status = request.arg("status", dict, {})
        if self.clients.register(site, request.arg("session", str), status):
            log.info("%s re-registered; its old session is replaced", site)
        else:
            log.info("%s registered", site)
        self._maybe_rejoin(site, status)
        return {"server": "ok", "heartbeat_grace": self.options.client_grace}

    def _maybe_rejoin(self, site: str, status: dict[str, Any]) -> None:
        """A site of the running run that came back without its app (it restarted) is deployed and started
        again, in the background; it takes part from the next task it is sent."""
        with self._lock:
            wanted = self.status == EngineStatus.STARTED and site in self._run_sites and site not in self._rejoining
            current = status.get("status") == "started" and status.get("run") == self.run_number
            if not wanted or current:
                return
            self._rejoining.add(site)
        threading.Thread(target=self._rejoin, args=(site,), name=f"rejoin-{site}", daemon=True).start()

    def _rejoin(self, site: str) -> None:
        try:
            with self._lock:
                run, app = self.run_number, self.app_name
            if run is None or app is None:
                return
            source = self.workspace.transfer_dir / app
            archive = pack_app(source if source.is_dir() else self.workspace.app_dir(run))
            for command, args in (
                ("deploy_app", {"app": app, "run": run, "archive": archive}),
                ("start_app", {"run": run}),
            ):
                with self._lock:
                    if self.status != EngineStatus.STARTED or self.run_number != run:
                        log.info("run %d is no longer running; %s does not rejoin", run, site)
                        return
                answer = self._ask_sites([site], command, args)[site]
                if not answer["ok"]:
                    log.warning("%s could not rejoin run %d: %s failed: %s", site, run, command, answer["error"])
                    return
            log.info("%s rejoined run %d", site, run)
        finally:
            with self._lock:
                self._rejoining.discard(site)

    def cmd_heartbeat(self, request: Request) -> dict[str, Any]:
        site, status = request.arg("site", str), request.arg("status", dict, {})
        known = self.clients.heartbeat(site, request.arg("session", str), status)
        if known:
            self._maybe_rejoin(site, status)
        return {"known": known}

    def cmd_remove_client(self, request: Request) -> str:
        site = request.arg("site", str)
        if not self.clients.remove(site):
            raise BadRequest(f"{site} is not registered")
        return f"removed {site}"

    # ---- apps and runs ----------------------------------------------------------------------------

    def cmd_upload_app(self, request: Request) -> str:
        app = check_app_name(request.arg("app", str))
        unpack_app(request.arg("archive", bytes), self.workspace.transfer_dir / app)
        log.info("staged app %s", app)
        return f"uploaded app {app} to {self.workspace.transfer_dir / app}"

    def cmd_list_apps(self, request: Request) -> list[str]:
        folder = self.workspace.transfer_dir
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def cmd_set_run_number(self, request: Request) -> dict[str, Any]:
        run = request.arg("run", int)
        if run < 1:
            raise BadRequest(f"run number must be >= 1, got {run}")
        with self._lock:
            if self.status in (EngineStatus.STARTING, EngineStatus.STARTED):
                raise BadRequest(f"cannot change the run number while the app is {self.status.value}")
            run_dir = self.workspace.run_dir(run)
            existed = run_dir.is_dir()
            run_dir.mkdir(parents=True, exist_ok=True)
            if run != self.run_number:
                self.app_name = self._deployed_app_of(run)
            self.run_number = run
        self._save_state()
        server = f"run_{run} exists already" if existed else f"Created a new run folder: run_{run}"
        return {"server": server, "clients": self._ask_sites(self.clients.alive(), "set_run_number", {"run": run})}

    def cmd_delete_run_number(self, request: Request) -> str:
        run = request.arg("run", int)
        with self._lock:
            if run == self.run_number and self.status != EngineStatus.STOPPED:
                raise BadRequest(f"run {run} is the running one")
            run_dir = self.workspace.run_dir(run)
            if not run_dir.is_dir():
                raise BadRequest(f"run_{run} does not exist")
            shutil.rmtree(run_dir)
            if run == self.run_number:
                self.run_number, self.app_name = None, None
        self._save_state()
        return f"deleted run_{run}"

    def _deployed_app_of(self, run: int) -> str | None:
        marker = self.workspace.run_dir(run) / "fl_app.txt"
        return marker.read_text(encoding="utf-8").strip() or None if marker.is_file() else None

    def cmd_deploy_app(self, request: Request) -> dict[str, Any]:
        app = check_app_name(request.arg("app", str))
        target, sites = self._targets(request)
        with self._lock:
            if self.run_number is None:
                raise BadRequest("set a run number first (set_run_number N)")
            staged = self.workspace.transfer_dir / app
            if not staged.is_dir():
                raise BadRequest(f"app {app} is not uploaded (upload_app {app})")
            if self.status != EngineStatus.STOPPED:
                raise BadRequest(f"cannot deploy while the server app is {self.status.value}")
            run = self.run_number
            reply: dict[str, Any] = {}
            if target in ("server", "all"):
                app_dir = self.workspace.app_dir(run)
                shutil.rmtree(app_dir, ignore_errors=True)
                shutil.copytree(staged, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
                (self.workspace.run_dir(run) / "fl_app.txt").write_text(app + "\n", encoding="utf-8")
                self.app_name = app
                self._run_sites = set()
                reply["server"] = f"deployed {app} to the server (run_{run})"
        self._save_state()
        if target in ("client", "all"):
            args = {"app": app, "run": run, "archive": pack_app(staged)}
            reply["clients"] = self._ask_sites(sites, "deploy_app", args)
        return reply

    # ---- running ----------------------------------------------------------------------------------

    def cmd_start_app(self, request: Request) -> dict[str, Any]:
        target, sites = self._targets(request)
        reply: dict[str, Any] = {}
        if target in ("server", "all"):
            reply["server"] = self._start_server_app()
        if target in ("client", "all"):
            with self._lock:
                if self.status != EngineStatus.STARTED:
                    raise BadRequest("start the server app first (start_app server)")
                run = self.run_number
            reply["clients"] = self._ask_sites(sites, "start_app", {"run": run})
            with self._lock:
                self._run_sites.update(site for site, answer in reply["clients"].items() if answer["ok"])
            self._save_state()
        return reply

    def _start_server_app(self) -> str:
        with self._lock:
            if self.run_number is None or self.app_name is None:
                raise BadRequest("deploy an app to the server first (deploy_app APP server)")
            if self.status != EngineStatus.STOPPED:
                raise BadRequest(f"the server app is already {self.status.value}")
            self.status = EngineStatus.STARTING
            self._abort = Signal()  # here, so an abort asked for while the app loads is not lost
            run = self.run_number
        context = RunContext("server", run, self.workspace.run_dir(run), self.workspace.app_dir(run))
        try:
            app = load_server_app(context.app_dir)
        except ConfigError as exc:
            with self._lock:
                self.status = EngineStatus.STOPPED
            self.errors.append(str(exc))
            raise
        with self._lock:
            self.progress = Progress(phase="starting")
            runtime = WorkflowRuntime(
                context=context,
                channel=self._channel,
                abort_signal=self._abort,
                live_clients=lambda: self.clients.started(run),
                hooks=[self._events],
                progress=self.progress,
            )
            self._channel.open_run(run)
            self._workflow_thread = threading.Thread(
                target=self._run_workflow, args=(app.workflow, runtime), name=f"workflow-run{run}", daemon=True
            )
            self.status = EngineStatus.STARTED
            self._workflow_thread.start()
        self._save_state()
        return f"started {self.app_name} (run_{run})"

    def _run_workflow(self, workflow: Any, runtime: WorkflowRuntime) -> None:
        run = runtime.context.run_number
        try:
            workflow.run(runtime)
        except Exception as exc:  # a broken app or component must not take the server down
            log.exception("run %d failed", run)
            runtime.progress.phase = "failed"
            self.errors.append(f"run {run}: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self.status = EngineStatus.STOPPING
            self._channel.close_run()
            self._ask_sites(self.clients.started(run), "end_run", {"run": run})
            with self._lock:
                self.status = EngineStatus.STOPPED
            if not self.shutdown_requested.is_set():  # a server stopped mid-run resumes it when restarted
                self._save_state()
            log.info("run %d ended: %s", run, runtime.progress.phase)

    def cmd_abort(self, request: Request) -> dict[str, Any]:
        target, sites = self._targets(request)
        reply: dict[str, Any] = {}
        if target in ("server", "all"):
            with self._lock:
                running = self.status in (EngineStatus.STARTING, EngineStatus.STARTED)
                if running:
                    self._abort.trigger("aborted by admin")
            reply["server"] = "abort requested" if running else "no app is running"
        if target in ("client", "all"):
            reply["clients"] = self._ask_sites(sites, "abort", {})
        return reply

    def cmd_abort_task(self, request: Request) -> dict[str, Any]:
        site = request.arg("site", str)
        if site not in {row["site"] for row in self.clients.snapshot()}:
            raise BadRequest(f"{site} is not registered")
        return {"clients": self._ask_sites([site], "abort_task", {})}

    def cmd_check_status(self, request: Request) -> dict[str, Any]:
        target, sites = self._targets(request, default="server")
        if target in ("client", "all"):
            return {"clients": self._ask_sites(sites, "check_status", {})}
        with self._lock:
            return {
                "engine_status": self.status.value,
                "app_name": self.app_name,
                "run_number": self.run_number,
                "phase": self.progress.phase,
                "current_round": self.progress.current_round,
                "num_rounds": self.progress.num_rounds,
                "rounds_done": self.progress.rounds_done,
                "registered_clients": self.clients.snapshot(),
                "errors": len(self.errors),
            }

    def cmd_show_stats(self, request: Request) -> dict[str, Any]:
        with self._lock:
            return {
                "phase": self.progress.phase,
                "current_round": self.progress.current_round,
                "num_rounds": self.progress.num_rounds,
                "rounds_done": self.progress.rounds_done,
                "start_round": self.progress.start_round,
                "run_number": self.run_number,
            }

    def cmd_sys_info(self, request: Request) -> dict[str, Any]:
        target, sites = self._targets(request, default="server")
        if target in ("client", "all"):
            return {"clients": self._ask_sites(sites, "sys_info", {})}
        return system_info()

    def cmd_show_errors(self, request: Request) -> list[str]:
        return list(self.errors[-50:])

    def cmd_shutdown(self, request: Request) -> dict[str, Any]:
        target, sites = self._targets(request)
        reply: dict[str, Any] = {}
        if target in ("client", "all"):
            reply["clients"] = self._ask_sites(sites, "shutdown", {})
            for site, answer in reply["clients"].items():
                if answer["ok"]:
                    self.clients.remove(site)  # it said goodbye: no need to wait out its grace period
        if target in ("server", "all"):
            alive = [s for s in self.clients.alive() if target != "all"]
            if alive:
                raise BadRequest(f"clients are still connected ({', '.join(alive)}): shut them down first")
            self._abort.trigger("server shutting down")
            self.shutdown_requested.set()
            reply["server"] = "shutting down"
        return reply

    # ---- talking to sites -------------------------------------------------------------------------

    def _targets(self, request: Request, default: str = "all") -> tuple[str, list[str]]:
        target = request.arg("target", str, default)
        if target not in ("server", "client", "all"):
            raise BadRequest(f"{request.command}: target must be server, client or all, got {target!r}")
        sites = request.arg("sites", list, [])
        if not sites:  # status asks every registered site (a silent one shows "no reply"); the rest, live ones
            all_registered = request.command == "check_status"
            sites = [row["site"] for row in self.clients.snapshot()] if all_registered else self.clients.alive()
        return target, [names.check_site_name(str(s)) for s in sites]

    def _ask_sites(self, sites: list[str], command: str, args: dict[str, Any]) -> dict[str, Any]:
        """Send `command` to every site at once; per site its result, or the error ('no reply')."""
        assert self._sites is not None
        run = self.run_number or 0
        futures: dict[str, Future[Any]] = {}
        answers: dict[str, Any] = {}
        for site in sites:
            try:
                futures[site] = self._sites.request(site, command, args, run=run, ttl=self.options.site_timeout)
            except FlBrokerError as exc:
                answers[site] = {"ok": False, "error": f"could not reach {site}: {exc}"}
        deadline = time.monotonic() + self.options.site_timeout
        for site, future in futures.items():
            try:
                result = future.result(max(0.0, deadline - time.monotonic()))
                answers[site] = {"ok": True, "result": result}
                if isinstance(result, dict) and isinstance(result.get("status"), dict):
                    self.clients.update_status(site, result["status"])
            except RemoteError as exc:
                answers[site] = {"ok": False, "error": exc.message}
            except FutureTimeout:
                future.cancel()
                answers[site] = {"ok": False, "error": "no reply"}
            except CancelledError:  # the server is closing
                answers[site] = {"ok": False, "error": "cancelled: the server is shutting down"}
        return answers
