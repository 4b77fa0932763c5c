"""The checkpoint: model and next round in one file, replaced by one rename, refused loudly when unreadable."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fl_broker.errors import CheckpointError
from fl_broker.fl.checkpoint import (
    Checkpoint,
    checkpoint_path,
    component_state,
    read_checkpoint,
    restore_state,
    write_checkpoint,
)
from fl_broker.fl.fedopt import FedAdam, FedYogi
from fl_broker.wire import codec
from fl_broker.wire.messages import DXO, DataKind


def test_the_model_and_round_come_back_as_committed(tmp_path):
    model = {"numpy_key": np.arange(9, dtype=np.float32).reshape(3, 3), "step": 7, "meta": {"lr": 0.1}}
    write_checkpoint(tmp_path, Checkpoint(next_round=4, model=model))
    back = read_checkpoint(tmp_path)
    assert back is not None and back.next_round == 4
    assert back.model["numpy_key"].dtype == np.float32 and back.model["numpy_key"].flags.writeable
    np.testing.assert_array_equal(back.model["numpy_key"], model["numpy_key"])
    assert back.model["step"] == 7 and back.model["meta"] == {"lr": 0.1}
    assert sorted(p.name for p in checkpoint_path(tmp_path).parent.iterdir()) == ["checkpoint.msgpack"]


def test_no_checkpoint_means_a_fresh_run(tmp_path):
    assert read_checkpoint(tmp_path) is None


def test_the_file_is_replaced_by_one_rename(tmp_path, monkeypatch):
    write_checkpoint(tmp_path, Checkpoint(1, {"w": np.zeros(2)}))
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src, dst):
        renames.append((os.path.basename(src), os.path.basename(dst)))
        assert read_checkpoint(tmp_path).next_round == 1  # up to the rename, the old commit stands
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write_checkpoint(tmp_path, Checkpoint(2, {"w": np.ones(2)}))
    assert renames == [("checkpoint.msgpack.tmp", "checkpoint.msgpack")]
    assert read_checkpoint(tmp_path).next_round == 2


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "not a readable checkpoint"),
        (b"\x00garbage", "not a readable checkpoint"),
        (codec.encode({"format": 99, "next_round": 1, "model": {}}), "expected a checkpoint of format 1"),
        (codec.encode({"format": 1, "next_round": -1, "model": {}}), "next_round"),
        (codec.encode({"format": 1, "next_round": 1, "model": [1]}), "model"),
        (codec.encode([1, 2]), "expected a checkpoint"),
    ],
)
def test_an_unreadable_checkpoint_is_an_error_not_a_fresh_start(tmp_path, body, message):
    path = checkpoint_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(body)
    with pytest.raises(CheckpointError, match=message) as info:
        read_checkpoint(tmp_path)
    assert "checkpoint.msgpack" in str(info.value)


def test_a_model_the_codec_cannot_carry_is_a_clear_error_and_leaves_the_old_commit(tmp_path):
    write_checkpoint(tmp_path, Checkpoint(1, {"w": np.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"cannot checkpoint the model .*object arrays are not allowed"):
        write_checkpoint(tmp_path, Checkpoint(2, {"w": np.array([object()])}))
    assert read_checkpoint(tmp_path).next_round == 1


def test_component_state_is_committed_and_restored_with_the_model(tmp_path):
    optimizer = FedAdam()
    model = {"w": np.ones(3, np.float32)}
    model = optimizer.shareable_to_learnable(DXO(DataKind.WEIGHTS, {"w": model["w"] + 2}).to_shareable(), model)
    state = component_state({"shareable_generator": optimizer, "aggregator": object()})
    assert list(state) == ["shareable_generator"]  # only what keeps state
    write_checkpoint(tmp_path, Checkpoint(next_round=1, model=model, workflow="sag", state=state))
    fresh = FedAdam()
    back = read_checkpoint(tmp_path)
    assert back is not None
    restore_state({"shareable_generator": fresh}, back)
    assert fresh.state_dict()["steps"] == 1
    for kind in ("m", "v"):
        np.testing.assert_array_equal(fresh.state_dict()[kind]["w"], optimizer.state_dict()[kind]["w"])


def test_a_checkpoint_without_state_reads_with_none_and_a_stateful_component_starts_afresh(tmp_path, caplog):
    body = codec.encode({"format": 1, "next_round": 2, "model": {"w": np.zeros(2)}, "workflow": ""})
    checkpoint_path(tmp_path).parent.mkdir(parents=True)
    checkpoint_path(tmp_path).write_bytes(body)
    back = read_checkpoint(tmp_path)
    assert back is not None and back.state == {}
    optimizer = FedYogi()
    restore_state({"shareable_generator": optimizer}, back)
    assert optimizer.state_dict()["steps"] == 0
    assert "the checkpoint holds no state for the shareable_generator: it starts afresh" in caplog.text
