"""fl_broker.server.task_channel: the server's end of the task protocol on the memory transport: one
publish per task, results of the active run handed over and settled by the controller, the rest refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from fl_broker.protocol.tasks import ResultMessage, TaskMessage
from fl_broker.server.task_channel import BrokerTaskChannel
from fl_broker.transport.memory import MemoryBroker
from fl_broker.wire import codec, names
from tests.support.deliveries import Settlements, delivery_of, weights

TIMEOUT = 5.0


@dataclass
class Server:
    broker: MemoryBroker
    channel: BrokerTaskChannel

    def site(self, login: str):
        transport = self.broker.connect(user=login)
        transport.declare(names.site_topology(login))
        return transport

    def dead_letters(self) -> list[str]:
        return [m.headers[names.REJECT_REASON_HEADER] for m in self.broker.messages(names.DEAD_LETTER_QUEUE)]

    def wait_dead_letters(self, count: int) -> list[str]:
        deadline = time.monotonic() + TIMEOUT
        while len(self.dead_letters()) < count:
            assert time.monotonic() < deadline, self.dead_letters()
            time.sleep(0.01)
        return self.dead_letters()

    def acked_everything(self) -> bool:
        """Stop consuming: whatever was not settled goes back to the result queue, so it stays empty only
        if every delivery was acked or rejected."""
        self.channel.stop()
        return self.broker.queue_depth(names.SERVER_RESULT_QUEUE) == 0


def make_server(*, enforce_site_users: bool = False) -> Server:
    broker = MemoryBroker()
    transport = broker.connect(user="server")
    transport.declare(names.server_topology())
    channel = BrokerTaskChannel(transport, enforce_site_users=enforce_site_users)
    channel.start()
    channel.open_run(1)
    return Server(broker, channel)


@pytest.fixture
def server() -> Iterator[Server]:
    made = make_server()
    yield made
    made.channel.stop()


def send_result(server: Server, login: str, message: ResultMessage) -> None:
    server.site(login).publish(names.RESULT_EXCHANGE, names.SERVER, message.encode())


def test_a_task_is_published_once_and_reaches_every_target(server: Server) -> None:
    for site in ("site-1", "site-2", "site-3"):
        server.site(site)
    task = weights(task_id="run1-train-round4")
    server.channel.send(task, ["site-1", "site-3"], round=4)
    for site, count in (("site-1", 1), ("site-2", 0), ("site-3", 1)):
        queued = server.broker.messages(names.task_queue(site))
        assert len(queued) == count, site
        for message in queued:
            assert "BCC" not in message.headers and message.correlation_id == "run1-train-round4"
            got = TaskMessage.decode_delivery(delivery_of(message), expected_sender="server")
            assert (got.run, got.round, got.shareable.task_id) == (1, 4, "run1-train-round4")


def test_a_result_of_the_active_run_is_handed_over_and_acked_when_accepted(server: Server) -> None:
    send_result(server, "site-1", ResultMessage(1, "site-1", 0, weights(2.0)))
    result = server.channel.receive(TIMEOUT)
    assert result is not None
    assert (result.site, result.round, result.task_id) == ("site-1", 0, "run1-train-round0")
    result.accept()
    assert server.channel.receive(0.05) is None
    assert server.acked_everything() and server.dead_letters() == []


def test_a_refused_result_is_dead_lettered_with_the_controllers_reason(server: Server) -> None:
    send_result(server, "site-1", ResultMessage(1, "site-1", 0, weights()))
    result = server.channel.receive(TIMEOUT)
    assert result is not None
    result.refuse("second result from site-1 for round 0")
    assert server.wait_dead_letters(1) == ["second result from site-1 for round 0"]


def test_a_result_of_another_run_is_refused_and_never_handed_over(server: Server) -> None:
    send_result(server, "site-1", ResultMessage(7, "site-1", 0, weights()))
    assert server.wait_dead_letters(1) == ["result for run 7, but the active run is 1"]
    assert server.channel.receive(0.05) is None


def test_results_waiting_when_the_run_ends_are_refused(server: Server) -> None:
    send_result(server, "site-1", ResultMessage(1, "site-1", 0, weights()))
    deadline = time.monotonic() + TIMEOUT
    while server.channel._inbox.empty():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    server.channel.close_run()
    assert server.wait_dead_letters(1) == ["the run ended before this result was used"]
    send_result(server, "site-1", ResultMessage(1, "site-1", 1, weights()))
    assert server.wait_dead_letters(2)[1] == "result for run 1, but the active run is None"


def test_with_site_logins_a_result_must_come_from_the_site_it_names() -> None:
    server = make_server(enforce_site_users=True)
    try:
        send_result(server, "site-1", ResultMessage(1, "site-2", 0, weights()))
        assert server.wait_dead_letters(1) == ["result from user 'site-1', but only 'site-2' may send it"]
        send_result(server, "site-2", ResultMessage(1, "site-2", 0, weights()))
        result = server.channel.receive(TIMEOUT)
        assert result is not None and result.site == "site-2"
        result.accept()
    finally:
        server.channel.stop()


@pytest.mark.parametrize(
    "body, content_type, reason",
    [
        (TaskMessage(1, 0, weights()).encode(), None, "envelope.kind: expected 'result', got 'task'"),
        (
            codec.encode({"v": 1, "kind": "result", "run": 1, "fields": {"site": "site-1"}, "shareable": None}),
            None,
            "fields.round is missing, the shareable is missing: a result needs",
        ),
        (ResultMessage(1, "site-1", 0, weights()).encode(), "text/plain", "content type 'text/plain'"),
        (b"\x00junk", None, "not an fl-broker body"),
    ],
)
def test_a_bad_result_is_dead_lettered_with_what_is_wrong(
    server: Server, body: bytes, content_type: str | None, reason: str
) -> None:
    settlements = Settlements()
    server.channel._on_result(settlements.delivery(body, user_id="site-1", content_type=content_type))
    [(action, why)] = settlements.seen
    assert action == "reject" and why is not None and reason in why
    assert server.channel.receive(0.05) is None


def test_a_task_the_broker_drops_unconfirmed_is_sent_again_once_its_site_reports_holding_nothing() -> None:
    broker = MemoryBroker()
    transport = broker.connect(user="server")
    transport.declare(names.server_topology())
    reports: dict[str, tuple[dict, float]] = {}
    channel = BrokerTaskChannel(transport, report=reports.get, resend_after=0.2)
    channel.start()
    channel.open_run(1)
    try:
        channel.send(weights(task_id="run1-train-round0"), ["site-9"], round=0)  # no queue: dropped, no error
        assert channel.copies.pending() == {"run1-train-round0": ["site-9"]}  # remembered until answered
        site = broker.connect(user="site-9")
        site.declare(names.site_topology("site-9"))
        idle = {"status": "started", "task": None, "done": None}
        deadline = time.monotonic() + TIMEOUT
        while not broker.messages(names.task_queue("site-9")):
            assert time.monotonic() < deadline, "the dropped task was not sent again"
            reports["site-9"] = (idle, time.monotonic())  # heartbeats: holding nothing
            channel.receive(0.05)  # where due copies are sent again
        (queued,) = broker.messages(names.task_queue("site-9"))
        assert TaskMessage.decode_delivery(delivery_of(queued), expected_sender="server").round == 0
    finally:
        channel.stop()
