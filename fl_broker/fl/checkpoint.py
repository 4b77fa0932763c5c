"""A run's checkpoint: the global model after the last finished round and the round to run next, committed
together in one file, so a server killed at any instruction resumes with exactly the right model.

The file is written whole to a temporary name, flushed to disk, and renamed over the old one: the rename is
the commit. A kill before it leaves the previous checkpoint, a kill after it the new one; never a model of
one round with the round number of another (which is what two files replaced one after the other allowed).
The body is the wire codec's (arrays as dtype + shape + bytes, no pickle).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from fl_broker.errors import CheckpointError, DecodeError
from fl_broker.fl.model import ModelLearnable
from fl_broker.wire import codec

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "models/checkpoint.msgpack"
FORMAT = 1


@dataclass(frozen=True)
class Checkpoint:
    """A committed round: the global model after it, the round to run next, and the id of the workflow it is
    a round of (an app may run several; "" in checkpoints written before there could be more than one)."""

    next_round: int
    model: ModelLearnable
    workflow: str = ""
    # The state of the workflow's stateful components (e.g. a server optimizer's moments) after that round,
    # by role ("shareable_generator", ...): committed with the model, so a resumed run continues them exactly.
    state: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Stateful(Protocol):
    """A component whose state must survive a server restart with the model (e.g. FedAdam's moments): the
    workflow commits `state_dict()` with every round and hands it back to `load_state_dict` on resume. The
    state is a dict of arrays, numbers, strings, lists and dicts (what the wire codec encodes)."""

    def state_dict(self) -> dict[str, Any]:
        """The component's state now."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state` (one that `state_dict` returned)."""


def component_state(components: Mapping[str, object]) -> dict[str, Any]:
    """The state of each stateful component in `components` (role -> component), by role."""
    return {role: c.state_dict() for role, c in components.items() if isinstance(c, Stateful)}


def restore_state(components: Mapping[str, object], checkpoint: Checkpoint) -> None:
    """Give each stateful component the state `checkpoint` holds for its role; one without any (a checkpoint
    written before the component kept state) starts afresh, with a warning."""
    for role, component in components.items():
        if not isinstance(component, Stateful):
            continue
        if role in checkpoint.state:
            component.load_state_dict(checkpoint.state[role])
        else:
            log.warning("the checkpoint holds no state for the %s: it starts afresh", role)


def checkpoint_path(run_dir: Path) -> Path:
    """Where the checkpoint of the run in `run_dir` lives."""
    return run_dir / CHECKPOINT_FILE


def write_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> None:
    """Commit `checkpoint` atomically (and durably: the data is on disk before the rename, the rename
    before this returns)."""
    path = checkpoint_path(run_dir)
    try:
        # Pieces that share the model's memory: written one after another, never joined into a copy of the model.
        fields = {
            "next_round": checkpoint.next_round,
            "model": checkpoint.model,
            "workflow": checkpoint.workflow,
            "state": checkpoint.state,
        }
        parts = codec.encode_parts({"format": FORMAT, **fields})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot checkpoint the model of run {run_dir.name}: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        file.writelines(parts)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)  # the commit
    _sync_directory(path.parent)


def read_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The last committed checkpoint of the run, or None if it has none. CheckpointError if one exists but
    cannot be read: resuming from anything else would silently give wrong weights."""
    path = checkpoint_path(run_dir)
    try:
        with open(path, "rb") as file:
            body = bytearray(os.fstat(file.fileno()).st_size)
            file.readinto(body)  # a writable buffer: the codec's arrays are views into it, not copies
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint: {exc}") from exc
    try:
        return _checkpoint_of(codec.decode(body))
    except (DecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint: {exc}") from exc


def _checkpoint_of(decoded: Any) -> Checkpoint:
    if not isinstance(decoded, dict) or decoded.get("format") != FORMAT:
        raise ValueError(f"expected a checkpoint of format {FORMAT}")
    next_round, model, workflow = decoded.get("next_round"), decoded.get("model"), decoded.get("workflow", "")
    if type(next_round) is not int or next_round < 0 or not isinstance(model, dict) or not isinstance(workflow, str):
        raise ValueError("expected next_round (int >= 0), model (map) and workflow (str)")
    state = decoded.get("state", {})  # absent in checkpoints written before components kept state
    if not isinstance(state, dict):
        raise ValueError("expected state (map)")
    return Checkpoint(next_round=next_round, model=model, workflow=workflow, state=state)


def _sync_directory(folder: Path) -> None:
    """Make a rename in `folder` durable (where the platform lets a directory be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
