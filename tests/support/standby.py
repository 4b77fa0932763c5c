"""A pair of servers on one workspace (active + standby) with two workers, and the checks of a takeover."""

from __future__ import annotations

import re
import time
import urllib.parse

import numpy as np

from tests.support.federation import ProcessFederation

INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)
TAKEOVER = re.compile(r"active server \(takeover (\d+)\): \S+ pid (\d+)")


def start_pair(fed: ProcessFederation, *server_args: str) -> None:
    """The active server ("server"), then a standby ("standby") on the same workspace, then two workers."""
    fed._spawn("server", "server", "--client-grace", "3", *server_args)
    fed.wait_for(lambda s: s["active_server"]["pid"] == fed.procs["server"].pid, what="the first server active")
    fed._spawn("standby", "server", "--client-grace", "3", *server_args)
    fed.wait_for(lambda s: s["standby_servers"] == 1, what="the standby to be counted")
    for site in ("site-1", "site-2"):
        fed.start_worker(site)
    fed.wait_clients(2)


def assert_nothing_unacked(node, url: str, timeout: float = 30) -> None:
    """Every durable queue reports 0 unacked messages (management stats lag a few seconds)."""
    vhost = urllib.parse.quote(urllib.parse.unquote(url.rsplit("/", 1)[1]), safe="")
    deadline = time.monotonic() + timeout
    while True:
        queues = node.api("GET", f"/api/queues/{vhost}")
        unacked = {q["name"]: q.get("messages_unacknowledged") for q in queues if q["durable"]}
        if all(count == 0 for count in unacked.values()):
            return
        assert time.monotonic() < deadline, unacked
        time.sleep(1)


def accepted_by_each_server(log: str) -> list[dict[int, list[str]]]:
    """round -> sites accepted, for each server in turn (the servers share one log file; each part begins
    where a server became active)."""
    per_server = []
    for part in TAKEOVER.split(log)[3::3]:  # the text after each takeover line
        accepted: dict[int, list[str]] = {}
        for match in re.finditer(r"round (\d+): accepted result from (\S+) ", part):
            accepted.setdefault(int(match.group(1)), []).append(match.group(2))
        per_server.append(accepted)
    return per_server


def assert_each_result_counted_once(fed: ProcessFederation) -> None:
    per_server = accepted_by_each_server(fed.log("server"))
    assert len(per_server) == 2, per_server
    for accepted in per_server:  # no server accepted a site twice in one round
        assert all(sorted(sites) == sorted(set(sites)) for sites in accepted.values()), accepted
    # the standby took up the rounds the first server had not finished, each with both sites
    last = max(per_server[1])
    assert last == 9 and all(sorted(per_server[1][r]) == ["site-1", "site-2"] for r in range(min(per_server[1]), 10))


def assert_exact(fed: ProcessFederation) -> None:
    model = np.load(fed.workspace / "server" / "run_1" / "models" / "server.npy")
    assert model.dtype == np.float32
    np.testing.assert_array_equal(model, INITIAL + 10)
