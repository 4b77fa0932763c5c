"""fl_broker.server.task_copies: a copy whose site keeps reporting no task is sent again (and only to that
site, until it answers); a busy, silent or finished site is left alone; a failed publish is tried again."""

from __future__ import annotations

import itertools
import time
from typing import Any

from fl_broker.errors import PublishFailed
from fl_broker.server.task_copies import SUPERSEDED_KEPT, TaskCopies

TASK = "run1-train-round3"
BOUND = 0.6
_ids = itertools.count()


def next_id() -> str:
    """A message id for one publish of the server's (the task channel makes them)."""
    return f"m{next(_ids)}"


class Sites:
    """Reports the test sets per site, stamped when set, and the copies published, in order."""

    def __init__(self) -> None:
        self.reports: dict[str, tuple[dict[str, Any], float]] = {}
        self.published: list[tuple[str, str]] = []
        self.refuse = 0  # how many publishes to refuse next
        self.message_ids: list[str] = []  # of every publish tried, in order

    def say(self, site: str, task: str | None = None, done: str | None = None, status: str = "started") -> None:
        self.reports[site] = ({"status": status, "task": task, "done": done}, time.monotonic())

    def report(self, site: str) -> tuple[dict[str, Any], float] | None:
        return self.reports.get(site)

    def publish(self, site: str, body: Any, task_id: str, message_id: str) -> None:
        self.message_ids.append(message_id)
        if self.refuse:
            self.refuse -= 1
            raise PublishFailed("unroutable (no queue bound)")
        self.published.append((site, task_id))


def watch(sites: Sites, seconds: float, copies: TaskCopies, say: dict[str, dict[str, Any]]) -> None:
    """For `seconds`: each site in `say` reports as given every 50 ms (as heartbeats do), copies are checked."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for site, kwargs in say.items():
            sites.say(site, **kwargs)
        copies.check()
        time.sleep(0.05)


def test_a_site_that_keeps_showing_no_task_is_sent_its_copy_again_until_it_answers() -> None:
    sites = Sites()
    copies = TaskCopies(report=sites.report, publish=sites.publish, resend_after=BOUND)
    copies.sent(TASK, 3, "run 1 round 3", b"task", ["site-1", "site-2"], published=True, message_id=next_id())
    watch(sites, BOUND / 2, copies, {"site-1": {}, "site-2": {"task": TASK}})
    assert sites.published == []  # not yet past the bound
    watch(sites, BOUND * 1.5, copies, {"site-1": {}, "site-2": {"task": TASK}})
    assert sites.published == [("site-1", TASK)]  # site-2 holds it: never sent again
    copies.answered("site-1", TASK)
    watch(sites, BOUND * 2, copies, {"site-1": {}})
    assert sites.published == [("site-1", TASK)]
    assert copies.pending() == {TASK: ["site-2"]}


def test_busy_finished_stopped_or_silent_sites_are_not_sent_a_copy_again() -> None:
    sites = Sites()
    copies = TaskCopies(report=sites.report, publish=sites.publish, resend_after=BOUND)
    sites.say("silent")  # reported before the copy went, never since
    copies.sent(
        TASK,
        3,
        "run 1 round 3",
        b"task",
        ["busy", "finished", "stopped", "silent"],
        published=True,
        message_id=next_id(),
    )
    say = {"busy": {"task": "run1-train-round2"}, "finished": {"done": TASK}, "stopped": {"status": "no app"}}
    watch(sites, BOUND * 3, copies, say)
    assert sites.published == []


def test_a_result_reported_done_is_sent_for_again_only_after_the_connection_was_interrupted() -> None:
    sites, interruptions = Sites(), [0]
    copies = TaskCopies(
        report=sites.report, publish=sites.publish, resend_after=BOUND, interruptions=lambda: interruptions[0]
    )
    copies.sent(TASK, 3, "run 1 round 3", b"task", ["site-1", "site-2"], published=True, message_id=next_id())
    say = {"site-1": {"done": TASK}, "site-2": {"done": TASK}}
    watch(sites, BOUND * 2, copies, say)
    assert sites.published == []  # done and no interruption: the results are on their way
    interruptions[0] += 1  # e.g. the broker restarted: non-persistent results in its queue are gone
    copies.answered("site-2", TASK)  # site-2's result got through after all
    watch(sites, BOUND / 2, copies, say)
    assert sites.published == []  # not before the bound
    watch(sites, BOUND * 1.5, copies, say)
    assert sites.published == [("site-1", TASK)]
    watch(sites, BOUND * 2, copies, say)
    assert sites.published == [("site-1", TASK)]  # the copy sent after the interruption is on its way again


def test_the_bound_starts_again_when_a_site_was_busy_in_between() -> None:
    sites = Sites()
    copies = TaskCopies(report=sites.report, publish=sites.publish, resend_after=1.0)  # room for a slow machine
    copies.sent(TASK, 3, "run 1 round 3", b"task", ["site-1"], published=True, message_id=next_id())
    watch(sites, 0.5, copies, {"site-1": {}})
    watch(sites, 0.1, copies, {"site-1": {"task": "run1-train-round2"}})
    watch(sites, 0.5, copies, {"site-1": {}})
    assert sites.published == []
    watch(sites, 0.8, copies, {"site-1": {}})
    assert sites.published == [("site-1", TASK)]


def test_a_copy_whose_publish_failed_is_tried_again_without_waiting_for_the_site() -> None:
    sites = Sites()
    sites.refuse = 1
    copies = TaskCopies(report=sites.report, publish=sites.publish, resend_after=60)
    copies.sent(TASK, 3, "run 1 round 3", b"task", ["site-1", "site-2"], published=False, message_id=next_id())
    watch(sites, 0.5, copies, {})
    assert sites.published == []  # the first try again comes 1 s after the failure
    watch(sites, 1.0, copies, {})
    assert sites.published in ([("site-2", TASK)], [("site-1", TASK)])  # one refused again, one sent
    watch(sites, 2.5, copies, {})
    assert sorted(sites.published) == [("site-1", TASK), ("site-2", TASK)]
    watch(sites, 1.0, copies, {})
    assert len(sites.published) == 2  # published now: left to the sites' reports


def test_a_later_round_forgets_every_unanswered_copy_of_earlier_rounds_and_keeps_their_message_ids() -> None:
    sites = Sites()
    copies = TaskCopies(report=sites.report, publish=sites.publish, resend_after=BOUND)
    copies.sent(TASK, 3, "run 1 round 3", b"task", ["site-1", "site-2", "site-3"], published=True, message_id="a")
    copies.sent("run1-validate-a", 3, "run 1 round 3", b"other", ["site-1"], published=True, message_id="b")
    copies.answered("site-3", TASK)
    watch(sites, BOUND * 1.5, copies, {"site-2": {}})  # site-2 shows no task: its copy is sent again
    [resent] = sites.message_ids
    assert copies.superseded("site-2") == []  # round 3 is not over yet
    copies.sent("run1-train-round4", 4, "run 1 round 4", b"next", ["site-1"], published=True, message_id="c")
    # site-2, down and no longer sent tasks, still has round 3 in its queue: that round is over too
    assert copies.pending() == {"run1-train-round4": ["site-1"]}
    assert copies.superseded("site-1") == ["a", "b"]
    assert copies.superseded("site-2") == ["a", resent]  # each publish of its copy, the resent one too
    assert copies.superseded("site-3") == []  # it answered
    copies.sent("run1-train-round4", 4, "run 1 round 4", b"next", ["site-2"], published=False, message_id="d")
    assert copies.superseded("site-1") == ["a", "b"]  # the same round: nothing more is over
    copies.clear()
    assert copies.superseded("site-1") == copies.superseded("site-2") == []


def test_a_site_gone_for_good_keeps_a_bounded_list_of_superseded_message_ids() -> None:
    sites = Sites()
    copies = TaskCopies(report=sites.report, publish=sites.publish, resend_after=BOUND)
    for round in range(SUPERSEDED_KEPT + 5):
        copies.sent(f"run1-train-round{round}", round, "r", b"t", ["gone"], published=True, message_id=f"m{round}")
    kept = copies.superseded("gone")
    assert (
        len(kept) == SUPERSEDED_KEPT and kept[-1] == f"m{SUPERSEDED_KEPT + 3}"
    )  # the newest, the last round's pending
