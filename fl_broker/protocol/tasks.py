"""The task protocol, both directions: the server sends a `TaskMessage` to sites on fl.task, each site
answers with a `ResultMessage` on fl.result.

On the wire a task is an envelope of kind "task" with fields {round} and the task's Shareable; a result is
kind "result" with fields {site, round} and the site's Shareable, whose task id, task name and cookie jar
are the task's (the cookie jar carries `contribution_round` back, as FLARE does).
"""

from __future__ import annotations

from dataclasses import dataclass

from fl_broker.protocol.message import WireMessage
from fl_broker.wire.envelope import Envelope, Kind
from fl_broker.wire.messages import Shareable

__all__ = ["ResultMessage", "TaskMessage", "sent_by_its_site"]


@dataclass
class TaskMessage(WireMessage):
    """One task for one or more sites: run `run`, round `round`, the work in `shareable`."""

    KIND = Kind.TASK
    FIELDS = {"round": (int,)}
    NEEDS_SHAREABLE = True

    run: int
    round: int
    shareable: Shareable

    def to_envelope(self) -> Envelope:
        """A task envelope."""
        return Envelope(Kind.TASK, self.run, {"round": self.round}, self.shareable)

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> TaskMessage:
        """The task in a checked envelope."""
        assert envelope.shareable is not None  # NEEDS_SHAREABLE
        return cls(run=envelope.run, round=envelope.fields["round"], shareable=envelope.shareable)

    def answer(self, site: str, result: Shareable) -> ResultMessage:
        """`site`'s result for this task, with the task's id, name and cookie jar (set on `result`)."""
        task = self.shareable
        result.task_id, result.task_name = task.task_id, task.task_name
        result.cookie_jar = dict(task.cookie_jar)
        return ResultMessage(run=self.run, site=site, round=self.round, shareable=result)


@dataclass
class ResultMessage(WireMessage):
    """One site's answer to a task of run `run`, round `round`."""

    KIND = Kind.RESULT
    FIELDS = {"site": (str,), "round": (int,)}
    NEEDS_SHAREABLE = True

    run: int
    site: str
    round: int
    shareable: Shareable

    def to_envelope(self) -> Envelope:
        """A result envelope."""
        return Envelope(Kind.RESULT, self.run, {"site": self.site, "round": self.round}, self.shareable)

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> ResultMessage:
        """The result in a checked envelope."""
        assert envelope.shareable is not None  # NEEDS_SHAREABLE
        fields = envelope.fields
        return cls(run=envelope.run, site=fields["site"], round=fields["round"], shareable=envelope.shareable)


def sent_by_its_site(result: ResultMessage) -> str:
    """The login a result must come from when every site connects with its own login: the site it names
    (pass as `expected_sender`, so one site cannot send results in another's name)."""
    return result.site
