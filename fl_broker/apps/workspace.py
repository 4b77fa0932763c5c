"""Workspace layout (FLARE 2.0's, which users know): one directory per participant, one per run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SERVER_DIR = "server"


@dataclass(frozen=True)
class Workspace:
    """Paths of one participant (`server` or a site name) inside a workspace root."""

    root: Path
    name: str

    @property
    def home(self) -> Path:
        """The participant's own directory, e.g. WS/site-1."""
        return self.root / self.name

    @property
    def transfer_dir(self) -> Path:
        """Where uploaded apps are staged (server) or kept for upload (admin)."""
        return self.home / "transfer"

    @property
    def log_file(self) -> Path:
        """The participant's log file."""
        return self.home / "log.txt"

    def run_dir(self, run: int) -> Path:
        """WS/<name>/run_N."""
        if run < 1:
            raise ValueError(f"run number must be >= 1, got {run}")
        return self.home / f"run_{run}"

    def app_dir(self, run: int) -> Path:
        """The deployed app of a run: run_N/app_server or run_N/app_<site>."""
        return self.run_dir(run) / f"app_{self.name}"

    def runs(self) -> list[int]:
        """Run numbers that have a folder, ascending."""
        found = []
        if self.home.is_dir():
            for child in self.home.iterdir():
                suffix = child.name.removeprefix("run_")
                if child.is_dir() and child.name.startswith("run_") and suffix.isdigit():
                    found.append(int(suffix))
        return sorted(found)
