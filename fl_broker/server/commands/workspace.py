"""Looking into workspaces: FLARE's read-only shell commands (pwd, ls, cat, head, tail, grep) on the
server's workspace or one site's, and download_model, which sends a run's global model to the admin."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fl_broker.apps import workspace_shell
from fl_broker.apps.workspace import Workspace
from fl_broker.errors import WorkspaceRefused
from fl_broker.protocol.control import BadRequest, Request
from fl_broker.server.commands import requested_run
from fl_broker.server.fanout import SiteFanout
from fl_broker.server.sessions import ClientRegistry
from fl_broker.server.state import EngineState
from fl_broker.wire import names

log = logging.getLogger(__name__)

SITE_COMMAND = "workspace"  # what a worker serves: {command, words} -> {"text": ...}
MODEL_FOLDER = "models"  # in run_N: the global model, as the persistor and the checkpoint write it


class WorkspaceCommands:
    """pwd, ls, cat, head, tail, grep (args: `target` = "server" or a site name, `words` = the rest of the
    typed line, parsed where it runs) and download_model (args: `run`, default the current run)."""

    def __init__(
        self, *, workspace: Workspace, state: EngineState, clients: ClientRegistry, sites: SiteFanout, max_bytes: int
    ) -> None:
        self.workspace = workspace
        self.state = state
        self.clients = clients
        self.sites = sites
        self.max_bytes = max_bytes  # what one reply may carry (the transport's max body size, less a margin)
        for command in workspace_shell.COMMANDS:  # cmd_pwd, cmd_ls, ...: one handler, told which by the request
            setattr(self, f"cmd_{command}", self._look)

    def _look(self, request: Request) -> str:
        target = request.arg("target", str)
        words = request.arg("words", list, [])
        if not all(isinstance(word, str) for word in words):
            raise BadRequest(f"{request.command}: every word must be a string")
        if target == names.SERVER:
            return workspace_shell.run(self.workspace.home, request.command, words)
        site = names.check_site_name(target)
        if site not in {row["site"] for row in self.clients.snapshot()}:
            raise BadRequest(f"{site} is not registered (the target is server or a registered site)")
        answer = self.sites.ask([site], SITE_COMMAND, {"command": request.command, "words": words})[site]
        if not answer["ok"]:
            raise WorkspaceRefused(f"{site}: {answer['error']}")
        result = answer["result"]
        return str(result.get("text", "")) if isinstance(result, dict) else str(result)

    def cmd_download_model(self, request: Request) -> dict[str, Any]:
        run = requested_run(request, self.state)
        folder = self.workspace.run_dir(run) / MODEL_FOLDER
        files = sorted(p for p in folder.iterdir() if _is_model_file(p)) if folder.is_dir() else []
        if not files:
            raise BadRequest(f"run {run} has no saved model ({folder} holds none)")
        total = sum(p.stat().st_size for p in files)
        if total > self.max_bytes:
            raise BadRequest(
                f"the model files of run {run} are {total} bytes, more than one reply may carry ({self.max_bytes}); "
                f"copy them from {folder}"
            )
        log.info("sending the model files of run %d to the admin (%d bytes)", run, total)
        return {"run": run, "files": {p.name: p.read_bytes() for p in files}}


def _is_model_file(path: Path) -> bool:
    """A finished file of the models folder: regular (not a link), not a temporary being written."""
    return path.is_file() and not path.is_symlink() and not path.name.endswith(".tmp")
