"""download_model's second half: write the model files a server sent into the admin's workspace and
describe them (arrays by dtype and shape, small ones in full)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from fl_broker.errors import WorkspaceRefused

SHOW_VALUES_UP_TO = 100  # elements: a model this small is printed, a larger one only described


def save_model(reply: Any, admin_dir: Path) -> dict[str, Any]:
    """Save `reply` ({run, files: {name: bytes}}) under ADMIN/download/run_N/models/; what was saved."""
    if not isinstance(reply, dict) or not isinstance(reply.get("run"), int) or not isinstance(reply.get("files"), dict):
        raise WorkspaceRefused("the server's answer to download_model is not {run, files}")
    folder = admin_dir / "download" / f"run_{reply['run']}" / "models"
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for name, data in sorted(reply["files"].items()):
        if not isinstance(name, str) or not isinstance(data, bytes) or not _plain_name(name):
            raise WorkspaceRefused(f"refused to save {name!r}: not a plain file name with bytes")
        _write(folder / name, data)
        saved.append({"name": name, "bytes": len(data), **_describe(name, data)})
    return {"run": reply["run"], "folder": str(folder), "files": saved}


def _plain_name(name: str) -> bool:
    """A file name that stays in its folder: no separator, not '.', '..' or hidden."""
    return bool(name) and Path(name).name == name and "\\" not in name and not name.startswith(".")


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a download cut short never leaves half a model under the real name


def _describe(name: str, data: bytes) -> dict[str, Any]:
    if not name.endswith(".npy"):
        return {}
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as exc:
        return {"array": f"unreadable: {exc}"}
    described: dict[str, Any] = {"array": f"{array.dtype} {'x'.join(map(str, array.shape)) or 'scalar'}"}
    if array.size <= SHOW_VALUES_UP_TO:
        described["values"] = str(array)
    return described
