"""apps/hello-pt's custom code in one process: the seeded non-IID split, the learner's train task with
its metrics, and its cross-site evaluation answers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the pt extra is not installed (pip install -e '.[pt]')")
pytest.importorskip("sklearn", reason="the pt extra is not installed (pip install -e '.[pt]')")

from fl_broker.apps.config import ClassResolver  # noqa: E402
from fl_broker.fl.context import RunContext, Signal  # noqa: E402
from fl_broker.pt.state import to_arrays  # noqa: E402
from fl_broker.wire import codec  # noqa: E402
from fl_broker.wire.envelope import shareable_from_dict, shareable_to_dict  # noqa: E402
from fl_broker.wire.messages import DXO, DataKind, Header, MetaKey, ReturnCode, Shareable  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "apps" / "hello-pt"
NET = {"path": "digits_net.DigitsNet", "args": {"seed": 0}}
DATA = {"path": "digits_data.DigitsShards", "args": {"num_sites": 2, "alpha": 0.5, "seed": 0}}
METRIC_NAMES = {"loss", "accuracy", "samples", "train_loss", "train_samples", "global_loss", "global_accuracy"}


def custom(name: str) -> Any:
    return ClassResolver(APP / "custom").resolve(name, "test")


def site_context(tmp_path: Path, site: str) -> RunContext:
    return RunContext(site, 1, tmp_path / site / "run_1", APP)  # APP/custom is the deployed custom/


def train_task(weights: dict[str, np.ndarray], current: int = 0) -> Shareable:
    task = DXO(DataKind.WEIGHTS, weights).to_shareable()
    task.set_header(Header.CURRENT_ROUND, current)
    return task


def learner(**args: Any) -> Any:
    return custom("digits_learner.DigitsLearner")(model=NET, dataset=DATA, **args)


def test_the_split_is_seeded_disjoint_complete_and_label_skewed():
    shards = custom("digits_data.DigitsShards")
    first, again, other = shards(seed=0), shards(seed=0), shards(seed=1)
    np.testing.assert_array_equal(first.site_index[0], again.site_index[0])
    assert not np.array_equal(first.test_index, other.test_index)
    parts = [first.test_index, *first.site_index]
    every = np.concatenate(parts)
    assert len(every) == len(set(every.tolist())) == 1797  # each image in exactly one place
    assert len(first.test_index) == pytest.approx(0.2 * 1797, abs=10)
    counts = np.array([first.label_counts(site) for site in ("site-1", "site-2")], dtype=float)
    shares = counts / counts.sum(axis=1, keepdims=True)
    assert 0.5 * np.abs(shares[0] - shares[1]).sum() > 0.3  # label distributions far apart: non-IID
    data = first.site("site-1")
    assert data.train_x.shape[1:] == (1, 8, 8) and data.train_x.dtype == np.float32
    assert 0 <= data.train_x.min() and data.train_x.max() <= 1
    assert len(data.val_y) == pytest.approx(0.25 * len(data.train_y), abs=2)


def test_a_site_the_split_has_no_shard_for_is_told_how_to_fix_it():
    with pytest.raises(ValueError, match=r"'site-3' has no shard: the data is split across num_sites=2 sites"):
        custom("digits_data.DigitsShards")().site("site-3")


def test_a_train_task_returns_new_weights_weighted_by_images_with_the_rounds_metrics(tmp_path):
    context = site_context(tmp_path, "site-1")
    initial = to_arrays(custom("digits_net.DigitsNet")())
    result = learner().execute("train", train_task(initial), context, Signal())
    assert result.return_code == ReturnCode.OK
    dxo = result.dxo
    assert dxo is not None and dxo.data_kind == DataKind.WEIGHTS
    assert sorted(dxo.data) == sorted(initial)
    assert not np.array_equal(dxo.data["fc1.weight"], initial["fc1.weight"])
    metrics = dxo.get_meta_prop(MetaKey.METRICS)
    assert set(metrics) == METRIC_NAMES
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert metrics["accuracy"] > metrics["global_accuracy"]  # training on the site's data helped on it
    assert 0 <= metrics["accuracy"] <= 1 and metrics["samples"] == 79 and metrics["train_samples"] == 315
    assert dxo.get_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND) == 315
    assert (context.run_dir / "model" / "local_model.pt").is_file()
    decoded = shareable_from_dict(codec.decode(codec.encode(shareable_to_dict(result))))
    assert decoded.dxo is not None and decoded.dxo.get_meta_prop(MetaKey.METRICS) == metrics


def test_training_is_reproducible_for_the_same_round_and_differs_between_rounds(tmp_path):
    initial = to_arrays(custom("digits_net.DigitsNet")())

    def trained(current: int) -> np.ndarray:
        result = learner().execute("train", train_task(initial, current), site_context(tmp_path, "site-2"), Signal())
        assert result.dxo is not None
        return result.dxo.data["fc2.weight"]

    np.testing.assert_allclose(trained(3), trained(3), rtol=1e-5, atol=1e-6)
    assert not np.allclose(trained(3), trained(4))


def test_cross_site_answers_submit_the_last_trained_model_and_validate_on_local_images(tmp_path):
    context, executor = site_context(tmp_path, "site-1"), learner()
    none = executor.execute("submit_model", Shareable(), context, Signal())
    assert none.return_code == ReturnCode.EXECUTION_RESULT_ERROR  # trained nothing yet
    trained = executor.execute("train", train_task(to_arrays(custom("digits_net.DigitsNet")())), context, Signal())
    submitted = executor.execute("submit_model", Shareable(), context, Signal())
    assert submitted.dxo is not None and submitted.dxo.data_kind == DataKind.WEIGHTS
    assert trained.dxo is not None
    for name, array in trained.dxo.data.items():
        np.testing.assert_array_equal(submitted.dxo.data[name], array)
    validated = executor.execute("validate", submitted, context, Signal())
    assert validated.dxo is not None and validated.dxo.data_kind == DataKind.METRICS
    assert set(validated.dxo.data) == {"loss", "accuracy", "samples"}
    expected = trained.dxo.get_meta_prop(MetaKey.METRICS)
    assert validated.dxo.data["accuracy"] == pytest.approx(expected["accuracy"])


def test_bad_train_tasks_are_answered_with_a_return_code_not_an_exception(tmp_path):
    context, executor = site_context(tmp_path, "site-1"), learner()
    wrong_shape = {**to_arrays(custom("digits_net.DigitsNet")()), "fc2.bias": np.zeros(3, np.float32)}
    assert executor.execute("train", train_task(wrong_shape), context, Signal()).return_code == ReturnCode.BAD_TASK_DATA
    metrics = DXO(DataKind.METRICS, {"a": 1.0}).to_shareable()
    assert executor.execute("train", metrics, context, Signal()).return_code == ReturnCode.BAD_TASK_DATA
    assert executor.execute("other", Shareable(), context, Signal()).return_code == ReturnCode.TASK_UNKNOWN
    unknown_site = site_context(tmp_path, "site-3")
    task = train_task(to_arrays(custom("digits_net.DigitsNet")()))
    assert learner().execute("train", task, unknown_site, Signal()).return_code == ReturnCode.EXECUTION_EXCEPTION


def test_an_abort_during_training_answers_task_aborted(tmp_path):
    signal = Signal()
    signal.trigger("test")
    task = train_task(to_arrays(custom("digits_net.DigitsNet")()))
    assert learner().execute("train", task, site_context(tmp_path, "site-1"), signal).return_code == (
        ReturnCode.TASK_ABORTED
    )


def test_learner_arguments_are_checked():
    with pytest.raises(ValueError, match="model and dataset are required"):
        custom("digits_learner.DigitsLearner")(model=NET)
    with pytest.raises(ValueError, match="epochs >= 1"):
        learner(epochs=0)


def test_a_site_without_a_shard_answers_every_task_with_a_return_code(tmp_path):
    executor, context = learner(), site_context(tmp_path, "site-3")
    task = train_task(to_arrays(custom("digits_net.DigitsNet")()))
    for name in ("train", "validate", "validate"):  # asked again: still nothing half built
        assert executor.execute(name, task, context, Signal()).return_code == ReturnCode.EXECUTION_EXCEPTION


def test_a_model_to_validate_that_does_not_fit_is_bad_task_data(tmp_path):
    weights = {**to_arrays(custom("digits_net.DigitsNet")()), "fc2.bias": np.zeros(3, np.float32)}
    answer = learner().execute("validate", train_task(weights), site_context(tmp_path, "site-1"), Signal())
    assert answer.return_code == ReturnCode.BAD_TASK_DATA
