"""The hello-numpy trainer updates the weights it was sent in place: its result is the received array itself
(a worker holds one copy of the model while it trains and sends, not two), with FLARE's values."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.numpy_components import LOCAL_MODEL, MODEL_KEY, NPTrainer
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
