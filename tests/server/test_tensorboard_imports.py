"""The server's TensorBoard writer must not drag torch into a process that does not use it (tensorboardX
imports torch when it can: 0.8 s and ~190 MB of RSS in the server where the pt extra is installed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("tensorboardX")

PROBE = """
import sys
from fl_broker.server.tensorboard import summary_writer_class
writer = summary_writer_class()
print(writer is not None, "torch" in sys.modules)
import importlib.util
print(importlib.util.find_spec("torch") is not None)
"""


def test_the_writer_loads_without_importing_torch_and_torch_stays_importable():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["True", "False"]  # a writer, and torch not loaded by it
    if out[2] == "True":  # torch installed: hiding it during the import left it importable afterwards
        check = "from fl_broker.server.tensorboard import summary_writer_class as s; s(); import torch"
        subprocess.run([sys.executable, "-c", check], check=True, capture_output=True)
