"""torch is an optional extra: the core, the programs and the numpy apps never import it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
import sys
from pathlib import Path
import fl_broker, fl_broker.cli, fl_broker.cli.simulate, fl_broker.cli.poc, fl_broker.server.engine
import fl_broker.fl.cross_site_eval, fl_broker.fl.scatter_gather, workers.worker, admin.console
from fl_broker.apps.loader import load_client_app, load_server_app
for app in ("hello-numpy-sag", "hello-numpy-cross-val"):
    load_server_app(Path("apps") / app)
    load_client_app(Path("apps") / app)
print(sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "sklearn", "fl_broker.pt")
             or name.startswith("fl_broker.pt")))
"""


def test_the_core_programs_and_numpy_apps_load_without_importing_torch():
    done = subprocess.run([sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
