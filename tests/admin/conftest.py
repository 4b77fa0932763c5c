"""An in-process federation (server engine + workers on a named MemoryBroker) and a way to run the admin
console against it, as `fl-broker admin --broker memory://NAME` would."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from admin import main as admin_main
from tests.support.inprocess import InProcessFederation

Federation = InProcessFederation


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    federation = Federation(tmp_path, ["site-1", "site-2"])
    federation.wait_registered(2)
    yield federation
    federation.close()


@dataclass
class Run:
    """What one `fl-broker admin` run printed and returned."""

    code: int
    text: str

    def objects(self) -> list[dict[str, Any]]:
        """The JSON lines (in --json mode)."""
        return [json.loads(line) for line in self.text.splitlines() if line.startswith("{")]


def run_admin(url: str, root: Path, commands: str, *, json_mode: bool = False, timeout: float = 3.0) -> Run:
    """`fl-broker admin --workspace ROOT --broker URL -c COMMANDS [--json]`, output captured."""
    args = argparse.Namespace(
        workspace=root, broker=url, timeout=timeout, commands=commands, script=None, json=json_mode
    )
    buffer = io.StringIO()
    code = admin_main.main(args, out=Console(file=buffer, width=200, highlight=False))
    return Run(code, buffer.getvalue())
