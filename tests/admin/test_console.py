"""The interactive session (prompt, confirmations, Ctrl-C, reconnect) and `watch`, on the in-process
transport."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console

from admin.commands import Fetcher
from admin.console import AdminConsole, Identity
from admin.main import describe_broker
from admin.watch import RunView, poll_updates, watch
from fl_broker.errors import ConnectionLost
from fl_broker.protocol.control import RequestClient
from fl_broker.wire import names
from tests.admin.conftest import Federation, run_admin


def make_console(fed: Federation, *, answers: list[str] | None = None, json_mode: bool = False, client=None):
    client = client or RequestClient(fed.broker.connect(user="admin"))
    fetcher = Fetcher(client, timeout=3, transfer_dir=fed.root / "admin" / "transfer")
    out = io.StringIO()
    replies = iter(answers or [])
    console = AdminConsole(
        fetcher,
        Identity("admin", "test broker"),
        out=Console(file=out, width=200, highlight=False),
        json_mode=json_mode,
        ask=lambda prompt: next(replies),
    )
    return console, out


def typed(*lines: str | BaseException):
    """A `read` function for AdminConsole.loop that 'types' the given lines, then Ctrl-D."""
    queue = list(lines)

    def read(prompt: str) -> str:
        if not queue:
            raise EOFError
        item = queue.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    return read


def test_banner_shows_who_and_where_never_the_password() -> None:
    identity = describe_broker("amqp://alice:pa55@broker.example:5673/%2Ffl")
    assert identity == Identity("alice", "amqp://broker.example:5673 vhost /fl")
    assert describe_broker("amqps://bob:x@h/").where == "amqps://h vhost /"
    assert describe_broker("amqp://h").user == "guest"


def test_interactive_loop_ctrl_c_and_ctrl_d(fed: Federation) -> None:
    console, out = make_console(fed)
    code = console.loop(typed("lpwd", KeyboardInterrupt(), "", "chek_status server"))
    text = out.getvalue()
    assert "Connected to test broker as admin" in text and "admin/transfer" in text
    assert "did you mean: check_status" in text
    assert code == 0 and console.failures == 1  # only scripted runs report failures in the exit code


def test_shutdown_asks_first_and_no_means_nothing_happens(fed: Federation) -> None:
    console, out = make_console(fed, answers=["n", "y"])
    console.loop(typed("shutdown client", "shutdown client site-1"))
    text = out.getvalue()
    assert "not confirmed: nothing was done" in text
    assert not fed.workers["site-2"].stopped.is_set() and fed.workers["site-1"].stopped.is_set()


def test_bye_ends_the_loop(fed: Federation) -> None:
    console, out = make_console(fed)
    assert console.loop(typed("bye", "lpwd")) == 0
    assert "admin/transfer" not in out.getvalue()


def test_help_lists_every_command_and_explains_one(fed: Federation) -> None:
    console, out = make_console(fed)
    console.loop(typed("help", "help check_status"))
    text = out.getvalue()
    for name in ("upload_app", "deploy_app", "watch", "bye", "sys_info", "remove_client"):
        assert name in text
    assert "status of the server or the clients" in text


class DroppingTransport:
    """A transport whose connection is gone."""

    def consumer_count(self, queue: str) -> int:
        raise ConnectionLost("connection lost during the operation")


class DroppingClient:
    """A request client whose connection is gone."""

    transport = DroppingTransport()

    def call(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionLost("connection lost during the operation")


def test_a_lost_connection_is_reported_and_replaced(fed: Federation) -> None:
    console, out = make_console(fed, client=DroppingClient())
    fresh = RequestClient(fed.broker.connect(user="admin"))
    console.fetcher.reconnect = lambda: fresh
    console.execute("check_status server")
    console.execute("check_status server")
    text = out.getvalue()
    assert (
        "the connection to the broker was lost" in text and "reconnected to the broker: try the command again" in text
    )
    assert "Registered clients" in text and console.failures == 1


def test_a_connection_that_cannot_come_back_says_so(fed: Federation) -> None:
    console, out = make_console(fed, client=DroppingClient())

    def fail() -> RequestClient:
        raise ConnectionLost("cannot connect after 6 attempts")

    console.fetcher.reconnect = fail
    console.execute("list_apps")
    assert "reconnecting failed too (cannot connect after 6 attempts)" in out.getvalue()


def start_run(fed: Federation) -> None:
    fed.stage_app()
    run = run_admin(fed.url, fed.root, "upload_app hello-numpy-sag; set_run_number 1; deploy_app hello-numpy-sag all")
    assert run.code == 0, run.text


@pytest.mark.parametrize("source", ["events", "polling"])
def test_watch_follows_the_run_to_the_end(fed: Federation, source: str, monkeypatch) -> None:
    if source == "polling":
        monkeypatch.setattr("admin.console.updates", lambda fetcher, transport: poll_updates(fetcher))
    start_run(fed)
    console, out = make_console(fed)
    console.execute("start_app all")
    outcome = console.execute("watch")
    assert outcome is not None and outcome.ok
    assert outcome.data == "run 1 finished: 10 / 10 rounds"
    assert "site-1" in out.getvalue() and "10/10" in out.getvalue()


def test_watch_with_no_run(fed: Federation) -> None:
    console, _ = make_console(fed)
    outcome = console.execute("watch")
    assert outcome is not None and outcome.data == "no run is going on"


def test_ctrl_c_leaves_watch_and_the_run_goes_on(fed: Federation, monkeypatch) -> None:
    def interrupted(fetcher: Fetcher, transport: Any) -> Iterator[RunView]:
        yield RunView(run=1, running=True, num_rounds=10)
        raise KeyboardInterrupt

    monkeypatch.setattr("admin.console.updates", interrupted)
    start_run(fed)
    console, _ = make_console(fed)
    console.execute("start_app all")
    outcome = console.execute("watch")
    assert outcome is not None and outcome.data == "left watch; the run goes on"
    assert fed.status()["engine_status"] in ("started", "stopped")
    assert fed.wait_stopped()["phase"] == "finished"


def test_poll_updates_stops_when_the_engine_stops() -> None:
    statuses = iter(
        [
            {"engine_status": "started", "phase": "round 0", "current_round": 0, "num_rounds": 2, "run_number": 1},
            {"engine_status": "started", "phase": "round 1", "current_round": 1, "num_rounds": 2, "run_number": 1},
            {"engine_status": "stopped", "phase": "finished", "current_round": 1, "num_rounds": 2, "run_number": 1},
        ]
    )

    class Fake:
        def call(self, command: str, args: dict[str, Any], **kw: Any) -> Any:
            if args["target"] == "client":
                return {
                    "clients": {"site-1": {"ok": True, "result": {"status": {"status": "started", "task": "train"}}}}
                }
            return next(statuses)

    seen = [(v.rounds_done, v.phase) for v in poll_updates(Fake(), interval=0)]  # type: ignore[arg-type]
    assert seen == [(0, "round 0"), (1, "round 1"), (2, "finished")]


def test_watch_from_the_event_stream(fed: Federation) -> None:
    start_run(fed)
    transport = fed.broker.connect(user="admin")
    console, out = make_console(fed, client=RequestClient(transport))
    console.execute("start_app server")  # the clients stay idle, so the run waits in round 0
    views: list[RunView] = []
    from admin import watch as watch_module

    source = watch_module.updates(console.fetcher, transport)
    assert source.__name__ == "event_updates"  # type: ignore[attr-defined]

    def recorded() -> Iterator[RunView]:
        for view in source:
            views.append(RunView(**{**view.__dict__, "sites": dict(view.sites)}))
            yield view

    threading.Timer(0.5, lambda: console.execute("start_app client")).start()
    last = watch(console.out, recorded())
    assert last is not None and last.finished and last.phase == "finished" and last.rounds_done == 10
    assert any(v.last_aggregation != "-" and "round" in v.last_aggregation for v in views)
    assert any("result accepted" in v.sites.values() for v in views)


def test_watch_after_a_finished_run_names_its_last_aggregation(fed: Federation) -> None:
    start_run(fed)
    console, out = make_console(fed)
    console.execute("start_app all")
    fed.wait_stopped()
    outcome = console.execute("watch")
    assert outcome is not None and outcome.data == "run 1 finished: 10 / 10 rounds"
    assert "last aggregation: round 9 (before watch started)" in out.getvalue()


def test_watch_reports_a_server_that_stops_answering(fed: Federation) -> None:
    console, out = make_console(fed)
    fed.engine._requests.stop()
    fed.connect("hung").consume(names.SERVER_CONTROL_QUEUE, lambda delivery: None)  # takes, never answers
    console.fetcher.timeout = 0.3
    outcome = console.execute("watch")
    assert outcome is not None and not outcome.ok and "did not answer" in (outcome.error or "")


def test_watch_of_a_stopped_server_says_so_at_once(fed: Federation) -> None:
    console, out = make_console(fed)
    fed.engine._requests.stop()
    outcome = console.execute("watch")
    assert outcome is not None and not outcome.ok and "the server is not running" in (outcome.error or "")


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    yield
    for thread in threading.enumerate():
        if thread.name.startswith("Timer"):
            thread.join(5)


def test_watch_falls_back_to_polling_without_a_private_queue(fed: Federation) -> None:
    class NoPrivateQueue:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def private_queue(self, bindings: Any) -> str:
            raise NotImplementedError

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    from admin import watch as watch_module

    start_run(fed)
    console, _ = make_console(fed)
    console.execute("start_app all")
    source = watch_module.updates(console.fetcher, NoPrivateQueue(fed.broker.connect(user="x")))  # type: ignore[arg-type]
    last = watch(console.out, source)
    assert last is not None and last.phase == "finished" and last.rounds_done == 10


def test_an_unexpected_error_is_one_line_and_the_session_goes_on(fed: Federation, monkeypatch) -> None:
    def broken(invocation: Any) -> Any:
        raise KeyError("oops")

    console, out = make_console(fed)
    monkeypatch.setattr(console.fetcher, "run", broken)
    console.loop(typed("list_apps", "lpwd"))
    text = out.getvalue()
    assert "internal error: KeyError: 'oops'" in text and "admin/transfer" in text and "Traceback" not in text
