"""Cyclic weight transfer: the visiting order, sites that fail, resuming at the exact hop, and bad arguments.

Each scripted site k computes w <- 10 w + k, which writes the visiting order into the digits of the model:
from 0, two FIXED cycles over site-1, site-2, site-3 give 123123 exactly.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fl_broker.apps.loader import load_server_app
from fl_broker.errors import ConfigError, WorkflowFailed
from fl_broker.fl.checkpoint import read_checkpoint
from fl_broker.fl.cyclic import CyclicController
from fl_broker.fl.events import EventType
from fl_broker.fl.model import FullModelShareableGenerator
from fl_broker.wire.messages import DXO, DataKind, ReturnCode, Shareable, make_reply
from tests.fl.fakes import Behaviour, FakeChannel, MemoryPersistor, make_runtime
from tests.support.federation import make_app, set_workflow

SITES = ("site-1", "site-2", "site-3")


def append_digit(site: str, task: Shareable, round_: int) -> list[Shareable]:
    """w <- 10 w + k on site-k."""
    assert task.dxo is not None
    k = int(site.rsplit("-", 1)[1])
    return [DXO(DataKind.WEIGHTS, {"w": task.dxo.data["w"] * 10 + k}).to_shareable()]


def failing(code: ReturnCode) -> Behaviour:
    return lambda site, task, round_: [make_reply(code)]


def silent(site: str, task: Shareable, round_: int) -> list[Shareable]:
    return []


def controller(persistor: MemoryPersistor | None = None, **args) -> tuple[CyclicController, MemoryPersistor]:
    persistor = persistor or MemoryPersistor({"w": np.zeros(2)})
    args.setdefault("num_rounds", 2)
    args.setdefault("task_check_period", 0.01)
    workflow = CyclicController(persistor=persistor, shareable_generator=FullModelShareableGenerator(), **args)
    return workflow, persistor


def channel_of(**behaviours: Behaviour) -> FakeChannel:
    return FakeChannel({site: behaviours.get(site.replace("-", "_"), append_digit) for site in SITES})


def final(persistor: MemoryPersistor) -> float:
    value = persistor.saved[-1]["w"]
    assert value[0] == value[1]
    return float(value[0])


def test_two_fixed_cycles_visit_the_sites_in_turn(tmp_path):
    workflow, persistor = controller()
    channel = channel_of()
    runtime = make_runtime(tmp_path, channel)
    workflow.run(runtime)
    assert [targets for _, targets in channel.sent] == [(site,) for site in SITES * 2]
    assert [r for r, _ in channel.sent] == [0, 0, 0, 1, 1, 1]
    assert [float(m["w"][0]) for m in persistor.saved] == [123.0, 123123.0]  # after each cycle
    assert runtime.progress.phase == "finished" and runtime.progress.rounds_done == 2
    done = [e for e in runtime.events if e.type == EventType.ROUND_DONE]
    assert [(e.round, e.data["accepted"], e.data["targets"]) for e in done] == [(0, 3, 3), (1, 3, 3)]
    assert channel.refused() == []
    checkpoint = read_checkpoint(runtime.context.run_dir)
    assert checkpoint is not None and checkpoint.next_round == 6 and checkpoint.model["w"][0] == 123123.0


def test_participating_clients_give_the_fixed_order(tmp_path):
    workflow, persistor = controller(participating_clients=["site-3", "site-1", "site-2"])
    workflow.run(make_runtime(tmp_path, channel_of()))
    assert final(persistor) == 312312.0


def test_a_site_that_fails_is_skipped_logged_and_the_model_goes_on(tmp_path, caplog):
    workflow, persistor = controller()
    channel = channel_of(site_2=failing(ReturnCode.EXECUTION_EXCEPTION))
    runtime = make_runtime(tmp_path, channel)
    with caplog.at_level(logging.WARNING):
        workflow.run(runtime)
    assert final(persistor) == 1313.0  # site-1, site-3, site-1, site-3
    assert "round 0: skipped site-2: return code EXECUTION_EXCEPTION; the model goes on unchanged" in caplog.text
    assert [(s.site, s.reason) for s in channel.refused()] == [("site-2", "return code EXECUTION_EXCEPTION")] * 2
    done = [e for e in runtime.events if e.type == EventType.ROUND_DONE]
    assert done[0].data["skipped"] == "round 0: 2 of 3 sites' results accepted: site-2 return code EXECUTION_EXCEPTION"
    assert runtime.progress.phase == "finished"


def test_a_result_that_does_not_fit_the_model_is_skipped(tmp_path):
    def wrong_shape(site, task, round_):
        return [DXO(DataKind.WEIGHTS, {"w": np.zeros(3)}).to_shareable()]

    workflow, persistor = controller(num_rounds=1)
    workflow.run(make_runtime(tmp_path, channel_of(site_1=wrong_shape)))
    assert final(persistor) == 23.0


def test_a_run_in_which_no_site_was_accepted_fails_with_the_reason(tmp_path):
    workflow, persistor = controller()
    bad = failing(ReturnCode.BAD_TASK_DATA)
    with pytest.raises(WorkflowFailed) as caught:
        workflow.run(make_runtime(tmp_path, channel_of(site_1=bad, site_2=bad, site_3=bad)))
    assert str(caught.value) == (
        "round 0: 0 of 3 sites' results accepted: site-1 return code BAD_TASK_DATA; site-2 return code "
        "BAD_TASK_DATA; site-3 return code BAD_TASK_DATA"
    )


def test_stray_and_duplicate_results_are_refused_and_not_counted(tmp_path):
    def twice(site, task, round_):
        return append_digit(site, task, round_) * 2

    workflow, persistor = controller()
    channel = channel_of(site_2=twice)
    workflow.run(make_runtime(tmp_path, channel))
    assert final(persistor) == 123123.0
    refused = channel.refused()
    assert [s.site for s in refused] == ["site-2", "site-2"]
    assert all("not the current task" in s.reason for s in refused)


def test_a_site_that_is_gone_is_skipped_after_task_assignment_timeout(tmp_path, caplog):
    workflow, persistor = controller(num_rounds=1, task_assignment_timeout=0.2)
    live = list(SITES)
    runtime = make_runtime(tmp_path, channel_of(site_2=silent), sites=live)
    runtime.hooks.append(lambda e: live.remove("site-2") if e.type == EventType.ROUND_STARTED else None)
    with caplog.at_level(logging.WARNING):
        workflow.run(runtime)
    assert final(persistor) == 13.0
    assert "skipped site-2: was not live for task_assignment_timeout=0.2 s" in caplog.text


def test_a_silent_site_is_skipped_at_task_result_timeout(tmp_path, caplog):
    workflow, persistor = controller(num_rounds=1, task_result_timeout=0.2)
    with caplog.at_level(logging.WARNING):
        workflow.run(make_runtime(tmp_path, channel_of(site_3=silent)))
    assert final(persistor) == 12.0
    assert "skipped site-3: sent no result within task_result_timeout=0.2 s" in caplog.text


def test_a_restarted_server_resumes_at_the_hop_and_counts_the_result_sent_before(tmp_path):
    # The first server stops while site-2 trains (its hop 1 of round 1); site-2's result reaches the queue
    # afterwards. The second server sends hop 1 again: the queued result counts, the second one is stale.
    live_behaviours = {site: append_digit for site in SITES}
    first_channel = FakeChannel(dict(live_behaviours))
    first, _ = controller()
    runtime = make_runtime(tmp_path, first_channel)

    def stop_when_site_2_is_sent_round_1(site, task, round_):
        if round_ == 1:
            runtime.abort_signal.trigger("server stopped")
            return []
        return append_digit(site, task, round_)

    first_channel.behaviours["site-2"] = stop_when_site_2_is_sent_round_1
    first.run(runtime)
    checkpoint = read_checkpoint(runtime.context.run_dir)
    assert checkpoint is not None and checkpoint.next_round == 4 and checkpoint.model["w"][0] == 1231.0

    second_channel = FakeChannel(dict(live_behaviours))
    late = DXO(DataKind.WEIGHTS, {"w": np.full(2, 12312.0)}).to_shareable()  # site-2's answer to the first server
    late.task_id = "run1-cyclic-train-round1-hop1"
    late.cookie_jar = {"contribution_round": 1}
    second_channel.push("site-2", 1, late)
    resumed, persistor = controller()
    resumed_runtime = make_runtime(tmp_path, second_channel)
    resumed.run(resumed_runtime)
    assert [targets for _, targets in second_channel.sent] == [("site-2",), ("site-3",)]
    assert final(persistor) == 123123.0
    assert [s.site for s in second_channel.refused()] == ["site-2"]  # its second answer to hop 1
    assert resumed_runtime.progress.phase == "finished"


def test_random_without_same_in_a_row_never_repeats_a_site_across_cycles(tmp_path):
    random.seed(7)
    workflow, _ = controller(num_rounds=30, order="RANDOM_WITHOUT_SAME_IN_A_ROW")
    channel = channel_of()
    workflow.run(make_runtime(tmp_path, channel))
    visits = [targets[0] for _, targets in channel.sent]
    cycles = [visits[i : i + 3] for i in range(0, 90, 3)]
    assert all(sorted(cycle) == list(SITES) for cycle in cycles)
    assert all(later[0] != earlier[-1] for earlier, later in zip(cycles, cycles[1:], strict=False))
    assert len({tuple(c) for c in cycles}) > 1  # it is shuffled


def test_waits_for_min_clients_and_abort_while_waiting(tmp_path):
    workflow, persistor = controller(min_clients=3)
    channel = channel_of()
    runtime = make_runtime(tmp_path, channel, sites=["site-1", "site-2"])
    thread = threading.Thread(target=workflow.run, args=(runtime,))
    thread.start()
    time.sleep(0.3)
    assert channel.sent == [] and thread.is_alive()  # 2 live sites, min_clients=3: nothing sent yet
    runtime.abort_signal.trigger("stop")
    thread.join(5)
    assert not thread.is_alive()
    assert persistor.saved == [] and runtime.progress.phase == "aborted"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"order": "ROUND_ROBIN"}, "order must be one of FIXED, RANDOM, RANDOM_WITHOUT_SAME_IN_A_ROW"),
        ({"num_rounds": -1}, "num_rounds must be >= 0, got -1"),
        ({"min_clients": 0}, "min_clients must be >= 1, got 0"),
        ({"task_assignment_timeout": -5}, "task_assignment_timeout must be >= 0, got -5"),
        ({"task_check_period": 0}, "task_check_period must be > 0"),
        ({"participating_clients": ["site-1", "site-1"]}, "participating_clients names a site more than once"),
    ],
)
def test_bad_arguments_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        controller(**args)


def cyclic_config(tmp_path: Path, args: dict, path: str = "fl_broker.fl.cyclic.CyclicController") -> Path:
    app = make_app(tmp_path)
    set_workflow(app, path, args)
    return app


def test_flare_s_config_loads_with_its_path_and_arguments(tmp_path):
    args = {"num_rounds": 3, "task_assignment_timeout": 10, "persistor_id": "persistor"}
    args |= {"shareable_generator_id": "shareable_generator", "task_name": "train"}
    app = cyclic_config(tmp_path, args, "nvflare.app_common.workflows.cyclic_ctl.CyclicController")
    workflow = load_server_app(app).workflow
    assert isinstance(workflow, CyclicController) and workflow.num_rounds == 3


def test_a_bad_order_in_the_config_names_the_file_and_the_key(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_server_app(cyclic_config(tmp_path, {"order": "SORTED"}))
    assert "config_fed_server.json: workflows[0].args: CyclicController refused them: order must be one of" in str(
        caught.value
    )
