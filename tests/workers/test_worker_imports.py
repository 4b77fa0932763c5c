"""What a worker of a numpy app loads: nothing of torch, TensorBoard or rich (each costs it resident memory
for nothing, tens of MiB for torch), checked in a fresh interpreter that runs the app's trainer on a task."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "tensorboard", "tensorboardX", "rich")

PROGRAM = """
import shutil, sys, tempfile
from pathlib import Path
import numpy as np
import workers.main  # the worker program and everything it imports
from fl_broker.transport.rabbitmq import RabbitMQTransport  # its transport
from fl_broker.apps.loader import load_client_app
from fl_broker.fl.context import RunContext, Signal
from fl_broker.protocol.tasks import TaskMessage
from fl_broker.wire.messages import DXO, DataKind

root = Path(tempfile.mkdtemp())
shutil.copytree(Path(sys.argv[1]) / "apps" / "hello-numpy-sag", root / "app")
app = load_client_app(root / "app")
task = DXO(data_kind=DataKind.WEIGHTS, data={"numpy_key": np.ones((3, 3), np.float32)}).to_shareable()
context = RunContext("site-1", 1, root / "run_1", root / "app")
executor = app.executors["train"]
result = executor.execute("train", task, context, Signal())
assert float(result.dxo.data["numpy_key"][0, 0]) == 2.0, result
print(" ".join(sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[2:]))))
"""


def test_a_worker_running_a_numpy_app_imports_no_torch_tensorboard_or_rich() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(ROOT), *HEAVY], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"a numpy worker imported {done.stdout.strip()}"
