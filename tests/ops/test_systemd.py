"""The systemd units pass `systemd-analyze verify` without a single warning."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
EXEC = "/opt/fl-broker/bin/fl-broker"


def test_units_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("systemd-analyze is not installed", pytrace=False)
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's binary exists: point it at a stand-in in the temp folder.
    binary = tmp_path / "bin" / "fl-broker"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    units = []
    for source, target in (
        ("fl-server.service", "fl-server.service"),
        ("fl-worker@.service", "fl-worker@site-1.service"),
    ):
        text = (UNITS / source).read_text()
        assert EXEC in text
        (tmp_path / target).write_text(text.replace(EXEC, str(binary)))
        units.append(str(tmp_path / target))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "" and done.stderr.strip() == "", done.stdout + done.stderr


def test_units_have_the_required_settings():
    worker = (UNITS / "fl-worker@.service").read_text()
    server = (UNITS / "fl-server.service").read_text()
    assert "EnvironmentFile=/etc/fl-broker/%i.env" in worker and "--site %i" in worker
    assert "EnvironmentFile=/etc/fl-broker/server.env" in server
    for unit in (worker, server):
        for line in ("Restart=on-failure", "User=fl-broker", "NoNewPrivileges=yes", "ProtectSystem=strict",
                     "ReadWritePaths=/var/lib/fl-broker", "PrivateTmp=yes", "KillSignal=SIGTERM"):  # fmt: skip
            assert line in unit.splitlines(), line
