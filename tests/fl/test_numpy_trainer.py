"""The hello-numpy trainer updates the weights it was sent in place: its result is the received array itself
(a worker holds one copy of the model while it trains and sends, not two), with FLARE's values; and keeps
them as the site's local model, byte for byte what np.save writes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.numpy_components import LOCAL_MODEL, MODEL_KEY, NPTrainer, overwrite_npy
from fl_broker.fl.round import stamp_task
from fl_broker.wire import codec
from fl_broker.wire.messages import DXO, DataKind, from_shareable


def _task(weights: np.ndarray) -> DXO:
    return DXO(data_kind=DataKind.WEIGHTS, data={MODEL_KEY: weights})


def test_the_result_is_the_received_array_plus_delta_updated_in_place(tmp_path: Path) -> None:
    received = codec.decode(bytearray(codec.encode({"w": np.arange(12, dtype=np.float32).reshape(3, 4)})))["w"]
    assert received.flags.writeable  # a delivered body is a bytearray: its arrays are writable views
    expected = received + 2.5
    context = RunContext("site-1", 1, tmp_path / "run_1", tmp_path / "app")
    result = NPTrainer(delta=2.5).execute("train", _task(received).to_shareable(), context, Signal())
    weights = from_shareable(result).data[MODEL_KEY]
    assert weights is received or np.shares_memory(weights, received)
    np.testing.assert_array_equal(weights, expected)
    np.testing.assert_array_equal(np.load(context.run_dir / LOCAL_MODEL), expected)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_the_trainer_keeps_its_weights_as_np_save_would_over_a_longer_file_from_before(tmp_path: Path) -> None:
    context = RunContext("site-1", 1, tmp_path / "run_1", tmp_path / "run_1" / "app_site-1")
    local = context.run_dir / LOCAL_MODEL
    local.parent.mkdir(parents=True)
    local.write_bytes(npy_bytes(np.arange(1000, dtype=np.float64)))  # e.g. an earlier, larger model
    task = DXO(data_kind=DataKind.WEIGHTS, data={MODEL_KEY: np.ones((3, 3), dtype=np.float32)}).to_shareable()
    task = stamp_task(task, name="train", task_id="t-0", round=0, num_rounds=1)
    result = NPTrainer().execute("train", task, context, Signal())
    trained = from_shareable(result).data[MODEL_KEY]
    assert local.read_bytes() == npy_bytes(trained)  # byte for byte, no tail of the old file
    np.testing.assert_array_equal(np.load(local, allow_pickle=False), np.full((3, 3), 2, dtype=np.float32))


def test_overwrite_creates_the_file_and_rewrites_it_in_place(tmp_path: Path) -> None:
    path = tmp_path / "m.npy"
    overwrite_npy(path, np.arange(6, dtype=np.int32).reshape(2, 3))
    inode = path.stat().st_ino
    overwrite_npy(path, np.zeros(4, dtype=np.float32))
    assert path.read_bytes() == npy_bytes(np.zeros(4, dtype=np.float32))
    assert path.stat().st_ino == inode  # the same file, written over
