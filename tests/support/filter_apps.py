"""hello-numpy-sag with filter chains on both sides, and the run that checks them: used on the in-process
transport and on the real RabbitMQ node, so both go through the same steps."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fl_broker.apps.archive import pack_app
from tests.support.federation import make_app

INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)

TEST_FILTERS = '''
"""Filters for the filter-chain tests."""

import numpy as np

from fl_broker.fl.filters import Filter
from fl_broker.wire.messages import DXO, ReturnCode


class Shift(Filter):
    """Adds `by` to every array of an OK Shareable (new arrays: those received may be read-only)."""

    def __init__(self, by: float) -> None:
        self.by = by

    def process(self, shareable, fl_ctx):
        dxo = shareable.dxo
        if dxo is not None and shareable.return_code == ReturnCode.OK:
            data = {name: (value + self.by).astype(value.dtype) for name, value in dxo.data.items()}
            shareable.dxo = DXO(dxo.data_kind, data, dxo.meta)
        return shareable


class Faulty(Filter):
    """Fails for `site` (the peer on the server, the site itself on a site) in `rounds`: raises, or with
    `returns_none` returns None."""

    def __init__(self, site: str, rounds: list, returns_none: bool = False) -> None:
        self.site, self.rounds, self.returns_none = site, rounds, returns_none

    def process(self, shareable, fl_ctx):
        who = fl_ctx.peer if fl_ctx.site_name == "server" else fl_ctx.site_name
        if who == self.site and fl_ctx.current_round in self.rounds:
            if self.returns_none:
                return None
            raise RuntimeError(f"refused on purpose in round {fl_ctx.current_round}")
        return shareable
'''


def chain(*filters: dict[str, Any]) -> list[dict[str, Any]]:
    """One task_*_filters list: these filters for the train task."""
    return [{"tasks": ["train"], "filters": list(filters)}]


def with_filters(folder: Path, server: dict[str, list], client: dict[str, list], **server_args: Any) -> Path:
    """hello-numpy-sag (workflow args changed by `server_args`) with the custom test filters and these
    filter lists (section name -> list) in its two configs."""
    app = make_app(folder, server_args=server_args)
    (app / "custom").mkdir(exist_ok=True)
    (app / "custom" / "test_filters.py").write_text(TEST_FILTERS)
    for name, sections in (("config_fed_server.json", server), ("config_fed_client.json", client)):
        path = app / "config" / name
        config = json.loads(path.read_text())
        config.update(sections)
        path.write_text(json.dumps(config))
    return app


def every_hook_app(folder: Path) -> Path:
    """Each of the four chains changes the model in its own way, so the final weights show that each ran
    once per round, in its place: the server adds 100 to the task, the site takes it off again (it trains
    on the true model, adding 1), clips its update (nine ones, norm 3) to norm 1.5 (so +0.5), and the
    server adds 0.25 to each result: +0.75 a round."""
    shift = "test_filters.Shift"
    return with_filters(
        folder / "every-hook",
        server={
            "task_data_filters": chain({"path": shift, "args": {"by": 100}}),
            "task_result_filters": chain({"path": shift, "args": {"by": 0.25}}),
        },
        client={
            "task_data_filters": chain({"path": shift, "args": {"by": -100}}),
            "task_result_filters": chain(
                {"name": "GaussianPrivacy", "args": {"clip_norm": 1.5, "noise_multiplier": 0}}
            ),
        },
    )


def faulty_app(folder: Path) -> Path:
    """Three rounds, each of the four chains failing once: in round 0 the server's data filter returns None
    for site-1 and site-2's own result filter raises; in round 1 site-2's own data filter raises and the
    server's result filter raises for site-1's result; round 2 goes through."""

    def faulty(site: str, round: int, **more: Any) -> list[dict[str, Any]]:
        return chain({"path": "test_filters.Faulty", "args": {"site": site, "rounds": [round], **more}})

    return with_filters(
        folder / "faulty",
        server={
            "task_data_filters": faulty("site-1", 0, returns_none=True),
            "task_result_filters": faulty("site-1", 1),
        },
        client={"task_data_filters": faulty("site-2", 1), "task_result_filters": faulty("site-2", 0)},
        num_rounds=3,
    )


def refused(chain: str, round: int) -> str:
    """The reason a Faulty filter's refusal gives."""
    return f"{chain}['train'][0] Faulty failed: RuntimeError: refused on purpose in round {round}"


SITE_1_ROUND_0 = "server task_data_filters['train'][0] Faulty returned NoneType, not a Shareable"
SITE_2_ROUND_0 = refused("client task_result_filters", 0)
SITE_1_ROUND_1 = refused("server task_result_filters", 1)
SITE_2_ROUND_1 = refused("client task_data_filters", 1)


class Federation(Protocol):
    """What the runs need: admin calls to the server (the in-process and the process federations)."""

    def call(self, command: str, **args: Any) -> Any: ...


def run_app(fed: Federation, app: Path, run: int, timeout: float = 120) -> dict[str, Any]:
    """Upload, deploy and start `app` as run `run`; the server's status once the run ended."""
    fed.call("upload_app", app=app.name, archive=pack_app(app))
    fed.call("set_run_number", run=run)
    fed.call("deploy_app", app=app.name, target="all")
    fed.call("start_app", target="all")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = fed.call("check_status", target="server")
        if status["engine_status"] == "stopped" and status["run_number"] == run and status["phase"] != "idle":
            if status["phase"] in ("finished", "failed", "aborted"):
                return status
        time.sleep(0.1)
    raise AssertionError(f"run {run} did not end within {timeout} s")


def check_filters_end_to_end(fed: Federation, workspace: Path, apps: Path, log: Callable[[str], str]) -> None:
    """Both runs, and what they must leave behind: exact weights, the refusals with their reasons, the
    errors in show_errors, and a server and workers that went on. `log(name)` is the log of participant
    `name` (server, site-1 ...)."""
    status = run_app(fed, every_hook_app(apps), run=1)
    assert status["phase"] == "finished", status
    np.testing.assert_array_equal(np.load(workspace / "server" / "run_1" / "models" / "server.npy"), INITIAL + 7.5)
    for site in ("site-1", "site-2"):  # the site trained on the true model of round 9 (initial + 6.75), plus 1
        trained = np.load(workspace / site / "run_1" / "model" / "best_numpy.npy")
        np.testing.assert_array_equal(trained, INITIAL + 7.75)
    assert fed.call("show_errors") == []

    status = run_app(fed, faulty_app(apps), run=2)
    assert status["phase"] == "finished", status  # round 2 counted
    np.testing.assert_array_equal(np.load(workspace / "server" / "run_2" / "models" / "server.npy"), INITIAL + 1)
    server_log = log("server")
    for round, (site_1, site_2) in enumerate(
        [(f"TASK_DATA_FILTER_ERROR ({SITE_1_ROUND_0})", f"TASK_RESULT_FILTER_ERROR ({SITE_2_ROUND_0})"),
         (f"TASK_RESULT_FILTER_ERROR ({SITE_1_ROUND_1})", f"TASK_DATA_FILTER_ERROR ({SITE_2_ROUND_1})")]
    ):  # fmt: skip
        summary = f"round {round}: 0 of 2 results accepted: site-1 return code {site_1}; site-2 return code {site_2}"
        assert summary in server_log
    assert re.search(r"round 2: accepted result from site-\d \(2/2\)", server_log)
    assert sorted(fed.call("show_errors")) == sorted(
        [
            f"server: round 0: train task for site-1: {SITE_1_ROUND_0}",
            f"site-2: round 0: train: {SITE_2_ROUND_0}",
            f"server: round 1: train result from site-1: {SITE_1_ROUND_1}",
            f"site-2: round 1: train: {SITE_2_ROUND_1}",
        ]
    )
    for round, reason in ((0, SITE_2_ROUND_0), (1, SITE_2_ROUND_1)):
        assert f"task run2-train-round{round} (train): {reason}" in log("site-2")
    clients = fed.call("check_status", target="client")["clients"]
    assert all(answer["ok"] for answer in clients.values()) and len(clients) == 2  # both workers still answer
