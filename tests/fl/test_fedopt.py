"""Server optimizers (FedAvgM, FedAdagrad, FedAdam, FedYogi) against steps worked out by hand, their state
across a server restart, and the config errors a wrong argument gives."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from fl_broker.apps.loader import load_server_app
from fl_broker.cli import _make_worker
from fl_broker.cli.simulate import simulate
from fl_broker.errors import ConfigError
from fl_broker.fl.aggregation import InTimeAccumulateWeightedAggregator
from fl_broker.fl.checkpoint import read_checkpoint
from fl_broker.fl.events import EventType
from fl_broker.fl.fedopt import FedAdagrad, FedAdam, FedAvgM, FedOptShareableGenerator, FedYogi, ServerOptimizer
from fl_broker.fl.model import ModelLearnable
from fl_broker.fl.scatter_gather import ScatterAndGather
from fl_broker.wire.messages import DXO, DataKind
from tests.fl.fakes import FakeChannel, MemoryPersistor, add_delta, make_runtime

X0 = np.array([1.0, 2.0])  # float64, so the hand computations below hold to the last few bits
DELTA_1 = np.array([1.0, -1.0])  # the first round's update direction (aggregate - global)
DELTA_2 = np.array([2.0, 0.0])  # the second round's


def two_steps(optimizer: ServerOptimizer, kind: DataKind = DataKind.WEIGHTS) -> list[np.ndarray]:
    """The model after each of two rounds whose aggregates move it by DELTA_1, then DELTA_2."""
    model: ModelLearnable = {"w": X0.copy()}
    seen = []
    for delta in (DELTA_1, DELTA_2):
        data = model["w"] + delta if kind == DataKind.WEIGHTS else delta
        model = optimizer.shareable_to_learnable(DXO(kind, {"w": data}).to_shareable(), model)
        seen.append(model["w"])
    return seen


def test_fedavgm_with_momentum_by_hand():
    # m1 = [1, -1], x1 = x0 + 0.5 m1; m2 = 0.9 m1 + [2, 0] = [2.9, -0.9], x2 = x1 + 0.5 m2
    first, second = two_steps(FedAvgM(server_learning_rate=0.5, server_momentum=0.9))
    np.testing.assert_allclose(first, [1.5, 1.5], rtol=0, atol=1e-15)
    np.testing.assert_allclose(second, [2.95, 1.05], rtol=0, atol=1e-15)


def test_fedavgm_defaults_are_plain_fedavg():
    first, second = two_steps(FedAvgM())
    np.testing.assert_array_equal(first, X0 + DELTA_1)
    np.testing.assert_array_equal(second, X0 + DELTA_1 + DELTA_2)


@pytest.mark.parametrize(
    ("optimizer", "v2"),
    [
        # Adam: v2 = 0.99 v1 + 0.01 [4, 0] = [0.0499, 0.0099]
        (FedAdam, (0.0499, 0.0099)),
        # Yogi: v2 = v1 - 0.01 * delta^2 * sign(v1 - delta^2) = 0.01 + 0.04 and 0.01 - 0
        (FedYogi, (0.05, 0.01)),
    ],
)
def test_fedadam_and_fedyogi_by_hand(optimizer, v2):
    # m1 = 0.1 * [1, -1]; v1 = [0.01, 0.01] for both (Yogi: 0 - 0.01 * 1 * sign(0 - 1))
    # x1 = x0 + 0.1 m1 / (0.1 + 0.001)
    # m2 = 0.9 m1 + 0.1 [2, 0] = [0.29, -0.09]; x2 = x1 + 0.1 m2 / (sqrt(v2) + 0.001)
    first, second = two_steps(optimizer(eta=0.1, beta_1=0.9, beta_2=0.99, tau=0.001))
    x1 = [1 + 0.1 * 0.1 / 0.101, 2 - 0.1 * 0.1 / 0.101]
    np.testing.assert_allclose(first, x1, rtol=1e-14)
    x2 = [x1[0] + 0.1 * 0.29 / (math.sqrt(v2[0]) + 0.001), x1[1] - 0.1 * 0.09 / (math.sqrt(v2[1]) + 0.001)]
    np.testing.assert_allclose(second, x2, rtol=1e-14)


def test_fedadagrad_by_hand():
    # beta_1 = 0: m = delta; v1 = [1, 1], v2 = [5, 1]
    first, second = two_steps(FedAdagrad(eta=0.1, tau=0.001))
    x1 = [1 + 0.1 / 1.001, 2 - 0.1 / 1.001]
    np.testing.assert_allclose(first, x1, rtol=1e-14)
    np.testing.assert_allclose(second, [x1[0] + 0.2 / (math.sqrt(5) + 0.001), x1[1]], rtol=1e-14)


@pytest.mark.parametrize("make", [lambda: FedAdam(), lambda: FedYogi(), lambda: FedAvgM(server_momentum=0.5)])
def test_a_weight_diff_aggregate_is_the_update_direction_itself(make):
    np.testing.assert_array_equal(two_steps(make(), DataKind.WEIGHT_DIFF)[1], two_steps(make())[1])


def test_arrays_that_are_not_floats_take_the_aggregate_and_others_stay():
    model = {"w": np.array([1.0], np.float32), "count": np.array([3], np.int64), "frozen": np.array([7.0])}
    aggregate = DXO(DataKind.WEIGHTS, {"w": np.array([2.0], np.float32), "count": np.array([5], np.int64)})
    updated = FedAdam().shareable_to_learnable(aggregate.to_shareable(), model)
    assert updated["w"].dtype == np.float32 and updated["w"][0] != 2.0  # optimized, not replaced
    np.testing.assert_array_equal(updated["count"], [5])
    assert updated["frozen"] is model["frozen"]


def test_a_step_that_would_overflow_is_refused_and_leaves_the_state_as_it_was():
    optimizer = FedAvgM(server_learning_rate=1e38, server_momentum=0.5)
    model = {"w": np.array([1.0], np.float32)}
    optimizer.shareable_to_learnable(
        DXO(DataKind.WEIGHT_DIFF, {"w": np.array([1e-38], np.float32)}).to_shareable(), model
    )
    before = optimizer.state_dict()
    with pytest.raises(ValueError, match="would make 'w' NaN or Inf"):
        optimizer.shareable_to_learnable(
            DXO(DataKind.WEIGHT_DIFF, {"w": np.array([10.0], np.float32)}).to_shareable(), model
        )
    after = optimizer.state_dict()
    assert after["steps"] == before["steps"] == 1
    np.testing.assert_array_equal(after["m"]["w"], before["m"]["w"])


def test_the_generic_generator_picks_the_optimizer_by_name():
    generic = FedOptShareableGenerator(optimizer="FedYogi", optimizer_args={"eta": 0.1, "tau": 0.001})
    np.testing.assert_array_equal(two_steps(generic)[1], two_steps(FedYogi(eta=0.1, tau=0.001))[1])
    assert generic.state_dict()["steps"] == 2


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FedOptShareableGenerator(optimizer="fedsgd"), r"optimizer: unknown 'fedsgd' \(known: fedavgm, "),
        (lambda: FedOptShareableGenerator(optimizer_args={"lr": 1}), "optimizer_args: .*'lr'.*takes eta, beta_1"),
        (lambda: FedOptShareableGenerator(optimizer_args={"eta": -1}), r"optimizer_args.eta must be in \(0, inf\)"),
        (lambda: FedAvgM(server_learning_rate=-0.1), r"server_learning_rate must be in \(0, inf\), got -0.1"),
        (lambda: FedAvgM(server_momentum=1.0), r"server_momentum must be in \[0, 1\)"),
        (lambda: FedAdam(beta_2=1.5), r"beta_2 must be in \[0, 1\)"),
        (lambda: FedYogi(tau=0), r"tau must be in \(0, inf\)"),
        (lambda: FedAdam(eta=float("nan")), "eta must be a finite number"),
    ],
)
def test_bad_arguments_are_refused_naming_the_key(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ---- with Scatter-and-Gather: the moments are committed with every round ----


def fedadam_workflow(num_rounds: int) -> tuple[ScatterAndGather, MemoryPersistor]:
    persistor = MemoryPersistor({"w": X0.copy()})
    workflow = ScatterAndGather(
        aggregator=InTimeAccumulateWeightedAggregator(),
        persistor=persistor,
        shareable_generator=FedAdam(eta=0.1, beta_1=0.9, beta_2=0.99, tau=0.001),
        min_clients=2,
        num_rounds=num_rounds,
    )
    return workflow, persistor


def fedadam_with_unit_steps(rounds: int) -> np.ndarray:
    """FedAdam by hand when every round's aggregate is the model + 1: delta = 1, so m_t = 1 - 0.9^t and
    v_t = 1 - 0.99^t."""
    x = X0.copy()
    for t in range(1, rounds + 1):
        x = x + 0.1 * (1 - 0.9**t) / (math.sqrt(1 - 0.99**t) + 0.001)
    return x


def test_fedadam_in_scatter_and_gather_matches_the_hand_computation(tmp_path):
    workflow, persistor = fedadam_workflow(4)
    workflow.run(make_runtime(tmp_path, FakeChannel({"site-1": add_delta(), "site-2": add_delta()})))
    np.testing.assert_allclose(persistor.saved[-1]["w"], fedadam_with_unit_steps(4), rtol=1e-14)
    checkpoint = read_checkpoint(tmp_path / "run_1")
    assert checkpoint is not None and checkpoint.state["shareable_generator"]["steps"] == 4
    np.testing.assert_allclose(checkpoint.state["shareable_generator"]["m"]["w"], [1 - 0.9**4] * 2, rtol=1e-14)


def stop_after_round(runtime, last: int) -> None:
    """Abort the run once round `last` is done, as a server stopped there would."""
    runtime.hooks.append(
        lambda e: runtime.abort_signal.trigger("stop") if e.type == EventType.ROUND_DONE and e.round == last else None
    )


def test_a_restarted_server_continues_the_moments_exactly(tmp_path):
    channel = FakeChannel({"site-1": add_delta(), "site-2": add_delta()})
    first, _ = fedadam_workflow(5)
    runtime = make_runtime(tmp_path, channel)
    stop_after_round(runtime, 1)
    first.run(runtime)
    resumed, persistor = fedadam_workflow(5)  # a new server: new components, state only from the checkpoint
    resumed.run(make_runtime(tmp_path, channel))
    # round 2's task went out early, before the stop after round 1; the resumed server sends it again
    assert [r for r, _ in channel.sent] == [0, 1, 2, 2, 3, 4]
    uninterrupted, reference = fedadam_workflow(5)
    uninterrupted.run(make_runtime(tmp_path / "reference", FakeChannel(channel.behaviours)))
    np.testing.assert_array_equal(persistor.saved[-1]["w"], reference.saved[-1]["w"])
    np.testing.assert_allclose(persistor.saved[-1]["w"], fedadam_with_unit_steps(5), rtol=1e-14)


def test_without_its_committed_moments_a_resumed_fedadam_would_differ(tmp_path):
    """The check above can fail: moments started afresh at round 2 give another model."""
    x = X0.copy()
    for t in (1, 2, 1, 2, 3):  # two rounds, then a restart that forgot m and v
        x = x + 0.1 * (1 - 0.9**t) / (math.sqrt(1 - 0.99**t) + 0.001)
    assert not np.allclose(x, fedadam_with_unit_steps(5), rtol=1e-6)


# ---- in an app's config ----

APP = Path(__file__).resolve().parents[2] / "apps" / "hello-numpy-sag"


def app_with_generator(tmp_path: Path, generator: dict) -> Path:
    app = tmp_path / "app"
    shutil.copytree(APP, app)
    path = app / "config" / "config_fed_server.json"
    config = json.loads(path.read_text())
    config["components"][1] = {"id": "shareable_generator", **generator}
    path.write_text(json.dumps(config))
    return app


def test_an_app_picks_a_server_optimizer_in_its_config(tmp_path):
    app = app_with_generator(tmp_path, {"path": "fl_broker.fl.fedopt.FedYogi", "args": {"eta": 0.05}})
    generator = load_server_app(app).components["shareable_generator"]
    assert isinstance(generator, FedYogi) and (generator.eta, generator.tau) == (0.05, 0.001)


@pytest.mark.parametrize(
    ("generator", "message"),
    [
        (
            {"path": "fl_broker.fl.fedopt.FedOptShareableGenerator", "args": {"optimizer": "adamw"}},
            "config_fed_server.json: components[1].args: FedOptShareableGenerator refused them: optimizer: "
            "unknown 'adamw'",
        ),
        (
            {"path": "fl_broker.fl.fedopt.FedAvgM", "args": {"server_learning_rate": -1}},
            "config_fed_server.json: components[1].args: FedAvgM refused them: server_learning_rate must be in",
        ),
        (
            {"path": "fl_broker.fl.fedopt.FedAdam", "args": {"eta": "fast"}},
            "config_fed_server.json: components[1].args.eta: expected float, got str 'fast'",
        ),
    ],
)
def test_a_bad_optimizer_config_names_the_file_and_the_key(tmp_path, generator, message):
    with pytest.raises(ConfigError) as caught:
        load_server_app(app_with_generator(tmp_path, generator))
    assert message in str(caught.value)


def test_a_step_that_would_overflow_fails_its_round_only_and_the_run_goes_on(tmp_path):
    def huge_diff(site, task, round_):
        return [DXO(DataKind.WEIGHT_DIFF, {"w": np.array([1e38], np.float32)}).to_shareable()]

    persistor = MemoryPersistor({"w": np.array([1.0], np.float32)})
    workflow = ScatterAndGather(
        aggregator=InTimeAccumulateWeightedAggregator(expected_data_kind="WEIGHT_DIFF"),
        persistor=persistor,
        shareable_generator=FedAvgM(),
        num_rounds=4,
    )
    runtime = make_runtime(tmp_path, FakeChannel({"site-1": huge_diff}))
    workflow.run(runtime)
    assert [float(m["w"][0]) for m in persistor.saved] == pytest.approx([1e38, 2e38, 3e38])
    done = [e for e in runtime.events if e.type == EventType.ROUND_DONE]
    assert done[3].data["failed"] == "the model update failed: FedAvgM's step would make 'w' NaN or Inf"
    assert runtime.progress.phase == "finished"


def test_fedadam_end_to_end_in_one_process_gives_the_hand_computed_model(tmp_path):
    app = app_with_generator(tmp_path, {"path": "fl_broker.fl.fedopt.FedAdam", "args": {"eta": 1.0}})
    config_file = app / "config" / "config_fed_server.json"
    config = json.loads(config_file.read_text())
    config["workflows"][0]["args"]["num_rounds"] = 3
    config_file.write_text(json.dumps(config))
    result = simulate(app, clients=2, workspace_root=tmp_path / "ws", make_worker=_make_worker)
    assert result.phase == "finished"
    # both sites add 1, so every round's delta is 1: x = x0 + sum_t (1 - 0.9^t) / (sqrt(1 - 0.99^t) + 0.001)
    steps = sum((1 - 0.9**t) / (math.sqrt(1 - 0.99**t) + 0.001) for t in (1, 2, 3))
    final = np.load(tmp_path / "ws" / "server" / "run_1" / "models" / "server.npy")
    assert final.dtype == np.float32
    np.testing.assert_allclose(final, np.arange(1, 10).reshape(3, 3) + steps, rtol=1e-6)
    assert float(final[0, 0]) == pytest.approx(4.890896, abs=1e-6)  # what the README shows
