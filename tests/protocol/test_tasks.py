"""fl_broker.protocol.tasks: tasks and results round-trip, and every refusal of decode_delivery, at the
message and at the receiving end (the worker for tasks; the server's end is tests/server/test_task_channel.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fl_broker.errors import DecodeError, MessageRefused, Unauthorized
from fl_broker.protocol.control import Request
from fl_broker.protocol.tasks import ResultMessage, TaskMessage, sent_by_its_site
from fl_broker.transport.memory import MemoryBroker
from fl_broker.wire import codec
from fl_broker.wire.envelope import shareable_to_dict
from fl_broker.wire.messages import ReturnCode, make_reply
from tests.support.deliveries import Settlements, weights
from workers.worker import ClientWorker, worker_workspace


def raw_body(kind: str, fields: dict[str, Any], *, shareable: bool = True, run: int = 1) -> bytes:
    """An envelope built by hand, so tests can break what the message classes never would."""
    carried = shareable_to_dict(weights()) if shareable else None
    return codec.encode({"v": 1, "kind": kind, "run": run, "fields": fields, "shareable": carried})


def test_a_task_round_trips() -> None:
    body = TaskMessage(4, 2, weights(5.0, task_id="run4-train-round2")).encode()
    task = TaskMessage.decode_delivery(Settlements().delivery(body))
    assert (task.run, task.round, task.shareable.task_id) == (4, 2, "run4-train-round2")
    assert task.shareable.dxo is not None
    np.testing.assert_array_equal(task.shareable.dxo.data["numpy_key"], np.full((3, 3), 5.0, np.float32))


def test_a_result_round_trips_and_can_be_required_to_come_from_its_site() -> None:
    body = ResultMessage(4, "site-2", 2, weights(6.0)).encode()
    result = ResultMessage.decode_delivery(
        Settlements().delivery(body, user_id="site-2"), expected_sender=sent_by_its_site
    )
    assert (result.run, result.site, result.round) == (4, "site-2", 2)
    with pytest.raises(Unauthorized, match="^result from user 'site-1', but only 'site-2' may send it$"):
        ResultMessage.decode_delivery(Settlements().delivery(body, user_id="site-1"), expected_sender=sent_by_its_site)


def test_the_answer_to_a_task_carries_its_id_name_and_cookie_jar() -> None:
    task = weights(task_id="run1-train-round3")
    task.cookie_jar = {"contribution_round": 3}
    message = TaskMessage(1, 3, task)
    answer = message.answer("site-1", make_reply(ReturnCode.OK))
    assert (answer.run, answer.site, answer.round) == (1, "site-1", 3)
    got = answer.shareable
    assert (got.task_id, got.task_name, got.cookie_jar) == ("run1-train-round3", "train", {"contribution_round": 3})
    got.cookie_jar["contribution_round"] = 9
    assert task.cookie_jar == {"contribution_round": 3}  # a copy: the executor cannot change the task's


TASK_REFUSALS = [
    (raw_body("result", {"site": "s", "round": 0}), "server", r"^envelope\.kind: expected 'task', got 'result'$"),
    (raw_body("task", {}), "server", r"^fields\.round is missing: a task needs fields\.round \(int\) and a shareable$"),
    (raw_body("task", {"round": "0"}), "server", r"^fields\.round is str: a task needs"),
    (raw_body("task", {"round": True}), "server", r"^fields\.round is bool: a task needs"),
    (raw_body("task", {"round": 0}, shareable=False), "server", r"^the shareable is missing: a task needs"),
    (raw_body("task", {"round": 0}), "site-1", r"^task from user 'server', but only 'site-1' may send it$"),
    (b"\x00garbage", "server", "not an fl-broker body"),
]
RESULT_REFUSALS = [
    (raw_body("task", {"round": 0}), None, r"^envelope\.kind: expected 'result', got 'task'$"),
    (raw_body("result", {"round": 0}), None, r"^fields\.site is missing: a result needs fields\.site \(str\)"),
    (raw_body("result", {"site": 1, "round": 0}), None, r"^fields\.site is int: a result needs"),
    (raw_body("result", {"site": "server", "round": None}), None, r"^fields\.round is null: a result needs"),
    (raw_body("result", {"site": "s", "round": 0}, shareable=False), None, r"^the shareable is missing"),
    (raw_body("result", {"site": "s", "round": 0}), sent_by_its_site, r"^result from user 'server', but only 's'"),
]


@pytest.mark.parametrize("body, sender, pattern", TASK_REFUSALS)
def test_task_refusals(body: bytes, sender: Any, pattern: str) -> None:
    with pytest.raises(MessageRefused, match=pattern):
        TaskMessage.decode_delivery(Settlements().delivery(body), expected_sender=sender)


@pytest.mark.parametrize("body, sender, pattern", RESULT_REFUSALS)
def test_result_refusals(body: bytes, sender: Any, pattern: str) -> None:
    with pytest.raises(MessageRefused, match=pattern):
        ResultMessage.decode_delivery(Settlements().delivery(body), expected_sender=sender)


def test_a_wrong_content_type_is_refused_for_tasks_too() -> None:
    body = TaskMessage(1, 0, weights()).encode()
    with pytest.raises(DecodeError, match="^content type 'text/plain'"):
        TaskMessage.decode_delivery(Settlements().delivery(body, content_type="text/plain"))


# --- the worker's end --------------------------------------------------------------------------------


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[ClientWorker]:
    """A worker that only the login `server` may send tasks to (not started: its _on_task is driven here)."""
    transport = MemoryBroker().connect(user="site-1")
    made = ClientWorker(
        site="site-1", workspace=worker_workspace(tmp_path, "site-1"), transport=transport, server_user="server"
    )
    yield made
    made.close()
    transport.close()


@pytest.mark.parametrize(
    "body, user, content_type, reason",
    [
        (
            TaskMessage(1, 0, weights()).encode(),
            "site-2",
            None,
            "task from user 'site-2', but only 'server' may send it",
        ),
        (TaskMessage(1, 0, weights()).encode(), "server", "application/json", "content type 'application/json'"),
        (Request("train").encode(), "server", None, "envelope.kind: expected 'task', got 'request'"),
        (raw_body("task", {"round": "x"}), "server", None, "fields.round is str: a task needs"),
    ],
)
def test_the_worker_dead_letters_a_refused_task_with_the_reason(
    worker: ClientWorker, body: bytes, user: str, content_type: str | None, reason: str
) -> None:
    settlements = Settlements()
    worker._on_task(settlements.delivery(body, user_id=user, content_type=content_type))
    [(action, why)] = settlements.seen
    assert action == "reject" and why is not None and why.startswith(reason)


def test_the_worker_refuses_a_valid_task_of_another_run(worker: ClientWorker) -> None:
    settlements = Settlements()
    worker._on_task(settlements.delivery(TaskMessage(7, 0, weights()).encode(), user_id="server"))
    assert settlements.seen == [("reject", "task for run 7, but run None is started on site-1")]
