"""download_model's two ends without a broker: what the server sends and refuses, what the admin saves."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from admin.download import save_model
from fl_broker.apps.workspace import Workspace
from fl_broker.errors import WorkspaceRefused
from fl_broker.protocol.control import BadRequest, Request
from fl_broker.server.commands.workspace import WorkspaceCommands
from fl_broker.server.sessions import ClientRegistry
from fl_broker.server.state import EngineState


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def commands(tmp_path: Path, max_bytes: int = 10_000) -> WorkspaceCommands:
    workspace = Workspace(tmp_path, "server")
    models = workspace.run_dir(2) / "models"
    models.mkdir(parents=True)
    (models / "server.npy").write_bytes(npy(np.ones((2, 2), dtype=np.float32)))
    (models / "server.npy.tmp").write_bytes(b"half written")
    (models / "elsewhere.npy").symlink_to(tmp_path / "outside.npy")
    (tmp_path / "outside.npy").write_bytes(b"not the model")
    state = EngineState(tmp_path / "engine.json")
    state.run_number = 2
    return WorkspaceCommands(
        workspace=workspace,
        state=state,
        clients=ClientRegistry(30),
        sites=None,
        max_bytes=max_bytes,  # type: ignore[arg-type]
    )


def test_the_server_sends_the_finished_model_files_of_a_run(tmp_path: Path) -> None:
    reply = commands(tmp_path).cmd_download_model(Request("download_model"))
    assert reply["run"] == 2 and sorted(reply["files"]) == ["server.npy"]  # no temporary, no link
    with pytest.raises(BadRequest, match="run 5 has no saved model"):
        commands(tmp_path / "other").cmd_download_model(Request("download_model", {"run": 5}))


def test_a_model_too_big_for_one_reply_is_refused_with_where_it_is(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match=r"more than one reply may carry \(10\); copy them from .*run_2/models"):
        commands(tmp_path, max_bytes=10).cmd_download_model(Request("download_model"))


def test_the_admin_saves_plain_names_only(tmp_path: Path) -> None:
    summary = save_model({"run": 2, "files": {"server.npy": npy(np.zeros(500))}}, tmp_path)
    (row,) = summary["files"]
    assert row["array"] == "float64 500" and "values" not in row  # too big to print
    assert (tmp_path / "download" / "run_2" / "models" / "server.npy").is_file()
    for name in ("../escape.npy", "sub/x.npy", ".hidden", ""):
        with pytest.raises(WorkspaceRefused, match="not a plain file name"):
            save_model({"run": 2, "files": {name: b"x"}}, tmp_path)
    assert not (tmp_path / "download" / "run_2" / "escape.npy").exists()
    with pytest.raises(WorkspaceRefused, match="is not {run, files}"):
        save_model(["not", "a", "reply"], tmp_path)
