"""The client worker: registers with the server, heartbeats, receives deployed apps over the broker and
runs the configured executor for each task it is sent."""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from fl_broker.apps import workspace_shell
from fl_broker.apps.archive import check_app_name, unpack_app
from fl_broker.apps.loader import ClientApp, load_client_app
from fl_broker.apps.workspace import Workspace
from fl_broker.errors import FlBrokerError, MessageRefused, TransportError
from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.executor import Executor
from fl_broker.fl.filters import Direction, FilterContext, FilterError, private_copy
from fl_broker.ops.malloc_tuning import release_free_memory
from fl_broker.ops.sysinfo import system_info
from fl_broker.protocol.control import BadRequest, Request, RequestClient, RequestServer, command_handlers
from fl_broker.protocol.tasks import TaskMessage
from fl_broker.transport import Delivery, Pieces, Subscription, Transport
from fl_broker.wire import names
from fl_broker.wire.messages import ReturnCode, Shareable, make_reply
from workers.app_policy import AppPolicy, AppRefused

log = logging.getLogger(__name__)

RESULT_RETRY_SECONDS = 30.0  # how long a refused result publish is retried before the task is given back
_RESULT_BACKOFF_MAX = 8.0
_TRIM_AFTER = 8 * 1024 * 1024  # task bodies from this size on leave enough in the heap to be worth trimming


class ClientWorker:
    """One site's worker. `start()` returns at once; `stopped` is set when it was told to shut down."""

    def __init__(
        self,
        *,
        site: str,
        workspace: Workspace,
        transport: Transport,
        heartbeat_interval: float = 5.0,
        request_timeout: float = 10.0,
        server_user: str | None = None,
        app_policy: AppPolicy | None = None,
        result_retry: float = RESULT_RETRY_SECONDS,
    ) -> None:
        self.site = names.check_site_name(site)
        self.workspace = workspace
        self.transport = transport
        self.heartbeat_interval = heartbeat_interval
        self.request_timeout = request_timeout
        # When set, only this broker login may send tasks and control requests (user_id is checked by the
        # broker), so another site cannot slip a task or a command into this site's queues.
        self.server_user = server_user
        self.app_policy = app_policy or AppPolicy()
        self.result_retry = result_retry
        self.session = uuid.uuid4().hex
        self.stopped = threading.Event()
        self.restart_requested = threading.Event()  # set with `stopped`: the program starts itself again
        self.run_number: int | None = None
        self.app_name: str | None = None
        self.app: ClientApp | None = None
        self.current_task: str | None = None  # the task held, from its delivery until it is settled
        self.last_done: str | None = None  # the last task whose result the broker confirmed
        self._superseded: frozenset[str] = frozenset()  # message ids of queued tasks of rounds that are over
        self._abort = Signal()
        self._status_seq = 0
        self._lock = threading.RLock()
        self._tasks: Subscription | None = None
        self._server: RequestClient | None = None
        senders = frozenset({server_user}) if server_user else None
        self._requests = RequestServer(
            transport, names.site_control_queue(site), command_handlers(self), allowed_users=senders
        )
        self._heartbeat_thread = threading.Thread(target=self._heartbeat_loop, name=f"heartbeat-{site}", daemon=True)

    # ---- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Declare this site's queues, serve control requests, register and heartbeat."""
        self.workspace.home.mkdir(parents=True, exist_ok=True)
        self.transport.declare(names.site_topology(self.site))
        self._server = RequestClient(self.transport)
        self._requests.start()
        self._heartbeat_thread.start()

    def close(self, *, wait: bool = True) -> None:
        """Stop taking tasks and requests (a task in hand is finished or left unacked for redelivery). With
        `wait=False` the heartbeat thread is not joined here: the caller closes the transport first (see `join`)."""
        self.stopped.set()
        self._abort.trigger("worker stopping")
        self._stop_tasks()
        self._requests.stop()
        if self._server is not None:
            self._server.close()
        if wait:
            self.join()

    def join(self, timeout: float = 5) -> None:
        """Wait for the heartbeat thread. A heartbeat in flight while the broker is gone waits for the transport
        to reconnect (up to its publish timeout): only the transport's close ends that wait, so a program
        stopping on a signal closes the transport before it joins (otherwise SIGTERM took this timeout)."""
        if self._heartbeat_thread.is_alive() and threading.current_thread() is not self._heartbeat_thread:
            self._heartbeat_thread.join(timeout=timeout)

    def status(self) -> dict[str, Any]:
        """This worker's own view, sent with heartbeats and replies."""
        with self._lock:
            state = "started" if self._tasks is not None else ("stopped" if self.app_name else "no app")
            self._status_seq += 1  # lets the server ignore a report overtaken by a newer one
            return {
                "app": self.app_name,
                "run": self.run_number,
                "status": state,
                "task": self.current_task,
                "done": self.last_done,  # with "task", how the server tells a task copy that never arrived
                "seq": self._status_seq,
            }

    def _heartbeat_loop(self) -> None:
        registered = False
        while not self.stopped.is_set():
            try:
                registered = self._register() if not registered else self._heartbeat()
            except FlBrokerError as exc:
                log.info("server not reachable yet (%s); retrying", exc)
                registered = False
            self.stopped.wait(self.heartbeat_interval if registered else 1.0)

    def _register(self) -> bool:
        assert self._server is not None
        args = {"site": self.site, "session": self.session, "status": self.status()}
        self._server.call(names.SERVER, "register", args, timeout=self.request_timeout)
        log.info("%s registered with the server", self.site)
        return True

    def _heartbeat(self) -> bool:
        assert self._server is not None
        args = {"site": self.site, "session": self.session, "status": self.status()}
        reply = self._server.call(names.SERVER, "heartbeat", args, timeout=self.request_timeout)
        return bool(reply.get("known")) if isinstance(reply, dict) else False  # unknown: register again

    # ---- control requests from the server ---------------------------------------------------------

    def cmd_set_run_number(self, request: Request) -> dict[str, Any]:
        run = request.arg("run", int)
        if run < 1:
            raise BadRequest(f"run number must be >= 1, got {run}")
        with self._lock:
            if self._tasks is not None:
                raise BadRequest(f"run {self.run_number} is started here")
            run_dir = self.workspace.run_dir(run)
            existed = run_dir.is_dir()
            run_dir.mkdir(parents=True, exist_ok=True)
            if run != self.run_number:
                self.run_number, self.app_name, self.app = run, None, None
        message = f"run_{run} exists already" if existed else f"Created a new run folder: run_{run}"
        return {"message": message, "status": self.status()}

    def cmd_deploy_app(self, request: Request) -> dict[str, Any]:
        app = check_app_name(request.arg("app", str))
        run, archive = request.arg("run", int), request.arg("archive", bytes)
        with self._lock:
            if self._tasks is not None:
                raise BadRequest(f"an app is started here (run {self.run_number}); abort it first")
            digest = self._check_policy(app, run, archive)
            unpack_app(archive, self.workspace.app_dir(run))
            self.run_number, self.app_name, self.app = run, app, None
        log.info("deployed %s for run %d%s", app, run, f" (content hash {digest})" if digest else "")
        return {"message": f"deployed {app} (run_{run})", "status": self.status()}

    def _check_policy(self, app: str, run: int, archive: bytes) -> str | None:
        """The app's content hash if this site's policy allows it (None: no policy). On a refusal the run has
        no app here any more, so a later start_app cannot start an app deployed before under this run."""
        if not self.app_policy.restricts:
            return None
        try:
            return self.app_policy.check(app, archive)
        except AppRefused as exc:
            log.warning("refused to deploy %s for run %d: %s", app, run, exc)
            shutil.rmtree(self.workspace.app_dir(run), ignore_errors=True)
            self.run_number, self.app_name, self.app = run, None, None
            raise

    def cmd_start_app(self, request: Request) -> dict[str, Any]:
        run = request.arg("run", int)
        superseded = request.arg("superseded", list, [])  # when rejoining a run: see _on_task
        if not all(isinstance(message_id, str) for message_id in superseded):
            raise BadRequest("start_app: every superseded message id must be a string")
        with self._lock:
            if self.app_name is None or self.run_number != run:
                raise BadRequest(f"no app is deployed here for run {run}")
            self._superseded = frozenset(superseded)
            if self._tasks is None:
                self._end_app()  # a previous start of this run's app, if any
                self.app = load_client_app(self.workspace.app_dir(run))
                self._abort = Signal()
                self.app.start_run(self._context(run), self._abort)  # FLARE's START_RUN to its components
                self._tasks = self.transport.consume(names.task_queue(self.site), self._on_task)
        log.info("started %s for run %d", self.app_name, run)
        return {"message": f"started {self.app_name}", "status": self.status()}

    def cmd_end_run(self, request: Request) -> dict[str, Any]:
        self._stop_tasks()
        return {"message": "run ended", "status": self.status()}

    def cmd_abort(self, request: Request) -> dict[str, Any]:
        log.info("abort requested by the server")
        self._abort.trigger("aborted by admin")
        self._stop_tasks()
        return {"message": "aborted", "status": self.status()}

    def cmd_abort_task(self, request: Request) -> dict[str, Any]:
        with self._lock:
            task, signal = self.current_task, self._abort
        if task is None:
            return {"message": "no task is running", "status": self.status()}
        signal.trigger("task aborted by admin")
        with self._lock:
            self._abort = Signal()  # the next task runs normally
        return {"message": f"abort requested for task {task}", "status": self.status()}

    def cmd_sys_info(self, request: Request) -> dict[str, Any]:
        return {"site": self.site, **system_info()}

    def cmd_check_status(self, request: Request) -> dict[str, Any]:
        return {"status": self.status()}

    def cmd_shutdown(self, request: Request) -> dict[str, Any]:
        # Reply first; the program's main loop closes the worker once `stopped` is set.
        self.stopped.set()
        self._abort.trigger("worker shutting down")
        return {"message": "shutting down", "status": self.status()}

    def cmd_restart(self, request: Request) -> dict[str, Any]:
        with self._lock:
            if self._tasks is not None:
                raise BadRequest(f"run {self.run_number} is started here; abort it first")
        log.info("restart requested by the server")
        self.restart_requested.set()
        self.stopped.set()  # reply first; the program's main loop closes the worker, then starts it again
        return {"message": "restarting", "status": self.status()}

    def cmd_workspace(self, request: Request) -> dict[str, Any]:
        """A read-only look into this site's workspace (pwd, ls, cat, head, tail, grep), for the admin."""
        words = request.arg("words", list, [])
        if not all(isinstance(word, str) for word in words):
            raise BadRequest("workspace: every word must be a string")
        return {"text": workspace_shell.run(self.workspace.home, request.arg("command", str), words)}

    def _stop_tasks(self) -> None:
        with self._lock:
            tasks, self._tasks = self._tasks, None
        if tasks is not None:
            self._abort.trigger("run ended")
            tasks.cancel()
            self._end_app()

    def _end_app(self) -> None:
        """END_RUN to the started app's components; a failure there is logged, never raised."""
        with self._lock:
            app = self.app
        if app is None:
            return
        try:
            app.end_run()
        except Exception:
            log.exception("ending the app's run failed")

    def _context(self, run: int) -> RunContext:
        return RunContext(self.site, run, self.workspace.run_dir(run), self.workspace.app_dir(run))

    # ---- tasks ------------------------------------------------------------------------------------

    def _on_task(self, delivery: Delivery) -> None:
        try:
            message = TaskMessage.decode_delivery(
                delivery, expected_sender=self.server_user, max_size=self.transport.options.max_body_size
            )
        except MessageRefused as exc:
            log.warning("dead-lettering a bad task: %s", exc)
            delivery.reject(str(exc))
            return
        with self._lock:
            run, app, signal, superseded = self.run_number, self.app, self._abort, self._superseded
        if message.run != run or app is None:
            delivery.reject(f"task for run {message.run}, but run {run} is started on {self.site}")
            return
        task = message.shareable
        if delivery.message_id in superseded:
            # Sent while this site was gone, and the server has moved on to a later round since: its result
            # would be refused as late, so training it would only hold up the current round's task.
            log.info("skipping task %s (round %d): superseded by a later round while this site was away",
                     task.task_id, message.round)  # fmt: skip
            delivery.ack()
            return
        with self._lock:
            self.current_task = task.task_id
        try:
            self._work_on(delivery, message, app, run, signal)
        finally:
            with self._lock:
                self.current_task = None
            if len(delivery.body) >= _TRIM_AFTER:
                release_free_memory()  # what arriving that body left in the heap: the next one starts lean

    def _work_on(self, delivery: Delivery, message: TaskMessage, app: ClientApp, run: int, signal: Signal) -> None:
        """Run the task, send its result, settle its delivery."""
        task = message.shareable
        result = self._execute(app, task, run, signal)
        log.info("task %s (%s) done: %s", task.task_id, task.task_name, result.return_code.value)
        if self.stopped.is_set() and result.return_code == ReturnCode.TASK_ABORTED:
            log.info("stopping: task %s goes back to the queue to be redone", task.task_id)
            return  # left unsettled: closing the subscription requeues it, so the task is not lost
        if not self._send_result(message, result):
            # Given back rather than held: on a connection that stays up, an unsettled task would never be
            # redelivered, and the server would wait for its result forever.
            delivery.release()
            return
        with self._lock:
            self.last_done = task.task_id
        delivery.ack()  # only now: a crash before this point means the task is redone, never lost

    def _send_result(self, message: TaskMessage, result: Shareable) -> bool:
        """Publish the result, retrying with backoff for `result_retry` seconds when the broker refuses it
        (its queue's node down, nacked, unroutable, connection lost); False if it could not be sent."""
        task_id = message.shareable.task_id
        body = self._result_body(message, result)
        deadline, delay = time.monotonic() + self.result_retry, 0.5
        while True:
            try:
                # Not persistent (no model-sized disk write on the broker): if a broker restart loses it, the
                # server sends the task again (fl_broker/server/task_copies.py) and it is trained anew.
                self.transport.publish(
                    names.RESULT_EXCHANGE, names.SERVER, body, correlation_id=task_id, persistent=False
                )
                return True
            except TransportError as exc:  # a second copy, if one got through after all, is counted once
                left = deadline - time.monotonic()
                if left <= 0 or self.stopped.is_set():
                    log.error("could not send the result of %s: %s; the task goes back to be redone", task_id, exc)
                    return False
                log.warning("could not send the result of %s (%s); retrying in %.1f s", task_id, exc, delay)
                self.stopped.wait(min(delay, left))
                delay = min(delay * 2, _RESULT_BACKOFF_MAX)

    def _result_body(self, task: TaskMessage, result: Shareable) -> Pieces:
        # Pieces share the result's arrays: the result is published without a second, encoded copy of it.
        try:
            return task.answer(self.site, result).encode_pieces()
        except (TypeError, ValueError) as exc:  # the executor returned something that cannot travel
            log.error("the result of %s cannot be encoded: %s", task.shareable.task_id, exc)
            return task.answer(self.site, make_reply(ReturnCode.EXECUTION_RESULT_ERROR)).encode_pieces()

    def _execute(self, app: ClientApp, task: Shareable, run: int, signal: Signal) -> Shareable:
        executor = app.executors.get(task.task_name)
        if executor is None:
            log.warning("no executor for task %r", task.task_name)
            return make_reply(ReturnCode.TASK_UNKNOWN)
        context = self._context(run)
        # FLARE's order: the task data filters, the executor, the task result filters; a filter that fails
        # refuses the task or its result with the reason (a filter-error reply), never the worker.
        fl_ctx = FilterContext.for_task(context, Direction.TASK_DATA, task, peer=names.SERVER)
        try:
            task = app.filters.apply(task, fl_ctx)
            kept = private_copy(task) if app.filters.needs_task_data(task.task_name) else None
            result = self._run_executor(executor, task, context, signal)
            return app.filters.apply(result, replace(fl_ctx, direction=Direction.TASK_RESULT, task_data=kept))
        except FilterError as exc:
            log.error("task %s (%s): %s", task.task_id, task.task_name, exc)
            return exc.reply()

    def _run_executor(self, executor: Executor, task: Shareable, context: RunContext, signal: Signal) -> Shareable:
        try:
            result = executor.execute(task.task_name, task, context, signal)
            if not isinstance(result, Shareable):
                log.error("executor for %r returned %s, not a Shareable", task.task_name, type(result).__name__)
                return make_reply(ReturnCode.EXECUTION_RESULT_ERROR)
            return result
        except Exception:
            log.exception("executor for %r failed", task.task_name)
            return make_reply(ReturnCode.EXECUTION_EXCEPTION)


def worker_workspace(root: Path, site: str) -> Workspace:
    """The workspace of `site` under `root`."""
    return Workspace(root, names.check_site_name(site))
