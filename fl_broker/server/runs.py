"""Run control: start the server side of a run on its own thread, abort it, end it (telling the sites), and
bring a site of the running run that restarted back into it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from fl_broker.apps.archive import pack_app
from fl_broker.apps.loader import ServerApp, load_server_app
from fl_broker.apps.workspace import Workspace
from fl_broker.errors import ConfigError, FlBrokerError, WorkflowFailed
from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.events import EventHook, EventType
from fl_broker.fl.progress import Phase, Progress, ProgressTracker
from fl_broker.fl.workflow import TaskChannel, WorkflowRuntime, run_in_order
from fl_broker.protocol.control import BadRequest
from fl_broker.server.fanout import SiteFanout
from fl_broker.server.filtered_channel import FilteredChannel
from fl_broker.server.metrics import MetricsRecorder
from fl_broker.server.sessions import ClientRegistry
from fl_broker.server.state import EngineState, EngineStatus
from fl_broker.server.task_channel import BrokerTaskChannel

log = logging.getLogger(__name__)


class RunControl:
    """Owns the workflow thread and the abort signal of the current run."""

    def __init__(
        self,
        *,
        state: EngineState,
        workspace: Workspace,
        channel: BrokerTaskChannel,
        clients: ClientRegistry,
        sites: SiteFanout,
        hooks: list[EventHook],
        shutting_down: Callable[[], bool],
    ) -> None:
        self.state = state
        self.workspace = workspace
        self.channel = channel
        self.clients = clients
        self.sites = sites
        self.hooks = hooks  # lifecycle event hooks every run gets (e.g. the event stream)
        self._shutting_down = shutting_down
        self._abort = Signal()
        self._tracker = ProgressTracker()
        self._metrics: MetricsRecorder | None = None
        self._thread: threading.Thread | None = None
        self._rejoining: set[str] = set()

    @property
    def progress(self) -> Progress:
        """Where the current (or last) run is."""
        return self._tracker.progress

    @property
    def latest_metrics(self) -> dict[str, Any] | None:
        """The metrics of the current (or last) run's latest round, as check_status shows them."""
        recorder = self._metrics
        return None if recorder is None else recorder.latest

    def start_server_app(self) -> str:
        """Load the deployed app of the current run and start its workflow; BadRequest if it cannot start
        now, ConfigError if the app is broken (kept for show_errors)."""
        with self.state.lock:
            if self.state.run_number is None or self.state.app_name is None:
                raise BadRequest("deploy an app to the server first (deploy_app APP server)")
            if self.state.status != EngineStatus.STOPPED:
                raise BadRequest(f"the server app is already {self.state.status.value}")
            self.state.status = EngineStatus.STARTING
            self._abort = Signal()  # here, so an abort asked for while the app loads is not lost
            run, app_name = self.state.run_number, self.state.app_name
        context = RunContext("server", run, self.workspace.run_dir(run), self.workspace.app_dir(run))
        try:
            app = load_server_app(context.app_dir)
        except ConfigError as exc:
            with self.state.lock:
                self.state.status = EngineStatus.STOPPED
            self.state.add_error(str(exc))
            raise
        self._launch(app, context, FilteredChannel(self.channel, app.filters, context, on_error=self.state.add_error))
        return f"started {app_name} (run_{run})"

    def _launch(self, app: ServerApp, context: RunContext, channel: TaskChannel) -> None:
        run = context.run_number
        with self.state.lock:
            self._tracker = ProgressTracker(Phase.STARTING)
            self._metrics = MetricsRecorder(context.run_dir)
            runtime = WorkflowRuntime(
                context=context,
                channel=channel,
                abort_signal=self._abort,
                live_clients=lambda: self.clients.started(run),
                hooks=[*self.hooks, self._tracker, self._metrics, *app.hooks],
            )
            self.channel.open_run(run)
            self._thread = threading.Thread(
                target=self._run_workflow, args=(app, runtime), name=f"workflow-run{run}", daemon=True
            )
            self.state.status = EngineStatus.STARTED
            self._thread.start()
            self.state.save()

    def _run_workflow(self, app: ServerApp, runtime: WorkflowRuntime) -> None:
        run = runtime.context.run_number
        try:
            app.start_run(runtime.context, runtime.abort_signal)  # FLARE's START_RUN to the app's components
            run_in_order(app.workflows, runtime)
        except WorkflowFailed as exc:  # an outcome, not a bug: one line says why
            self._fail(runtime, str(exc))
        except Exception as exc:  # a broken app or component must not take the server down
            log.exception("run %d failed", run)
            self._fail(runtime, f"{type(exc).__name__}: {exc}")
        finally:
            if self._metrics is not None:
                self._metrics.close()
            self._end_app(app)
            self._end_run(run)

    @staticmethod
    def _end_app(app: ServerApp) -> None:
        try:
            app.end_run()  # END_RUN to the app's components
        except Exception:
            log.exception("ending the app's run failed")

    def _fail(self, runtime: WorkflowRuntime, reason: str) -> None:
        """End the run as failed with `reason`: logged, kept for show_errors and check_status, and published
        as a run_failed event (the progress tracker is one of the hooks)."""
        run = runtime.context.run_number
        log.error("run %d failed: %s", run, reason)
        self.state.add_error(f"run {run}: {reason}")
        runtime.fire(EventType.RUN_FAILED, reason=reason)

    def _end_run(self, run: int) -> None:
        with self.state.lock:
            self.state.status = EngineStatus.STOPPING
        self.channel.close_run()
        self.sites.ask(self.clients.started(run), "end_run", {"run": run})
        with self.state.lock:
            self.state.status = EngineStatus.STOPPED
        if not self._shutting_down():  # a server stopped mid-run resumes it when restarted
            self.state.save()
        log.info("run %d ended: %s", run, self.progress.phase.value)

    def abort(self) -> str:
        """Ask the running workflow to stop."""
        with self.state.lock:
            running = self.state.running
            if running:
                self._abort.trigger("aborted by admin")
        return "abort requested" if running else "no app is running"

    def stop(self, reason: str) -> None:
        """Abort the running workflow, if any, whatever its state (the server is shutting down)."""
        self._abort.trigger(reason)

    def join(self, timeout: float = 30) -> None:
        """Wait up to `timeout` seconds for the workflow thread to end."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout=timeout)

    # ---- a site of the running run that restarted -------------------------------------------------

    def maybe_rejoin(self, site: str, status: dict[str, Any]) -> None:
        """A site of the running run that came back without its app (it restarted) is deployed and started
        again, in the background; it takes part from the next task it is sent."""
        with self.state.lock:
            wanted = (
                self.state.status == EngineStatus.STARTED
                and site in self.state.run_sites
                and site not in self._rejoining
            )
            current = status.get("status") == "started" and status.get("run") == self.state.run_number
            if not wanted or current:
                return
            self._rejoining.add(site)
        threading.Thread(target=self._rejoin, args=(site,), name=f"rejoin-{site}", daemon=True).start()

    def _rejoin(self, site: str) -> None:
        try:
            with self.state.lock:
                run, app = self.state.run_number, self.state.app_name
            if run is None or app is None:
                return
            source = self.workspace.transfer_dir / app
            archive = pack_app(source if source.is_dir() else self.workspace.app_dir(run))
            for command, args in (
                ("deploy_app", lambda: {"app": app, "run": run, "archive": archive}),
                # As late as can be: the copies in the site's queue of rounds that ended while it was gone
                # (it acks them untrained, see task_copies.py).
                ("start_app", lambda: {"run": run, "superseded": self.channel.copies.superseded(site)}),
            ):
                if not self._still_running(run):
                    log.info("run %d is no longer running; %s does not rejoin", run, site)
                    return
                answer = self.sites.ask([site], command, args())[site]
                if not answer["ok"]:
                    log.warning("%s could not rejoin run %d: %s failed: %s", site, run, command, answer["error"])
                    return
            log.info("%s rejoined run %d", site, run)
        finally:
            with self.state.lock:
                self._rejoining.discard(site)

    def _still_running(self, run: int) -> bool:
        with self.state.lock:
            return self.state.status == EngineStatus.STARTED and self.state.run_number == run

    def resume(self, run: int) -> None:
        """Start `run` again after a restart (it was running when the server stopped)."""
        log.info("run %d was running when the server stopped: resuming it", run)
        try:
            self.start_server_app()
        except FlBrokerError as exc:
            log.error("could not resume run %d: %s", run, exc)
