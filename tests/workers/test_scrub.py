"""The worker's environment scrub, in a fresh process: FL_* variables and URL passwords are gone from every
place code in the process (or a child of it) would look, and nothing else changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV_PASSWORD, ARG_PASSWORD = "Env-Pass_w0rd", "Arg-Pass_w0rd"

LOOK = """
import json, os, subprocess, sys
from workers.scrub import scrub_environment, url_passwords
removed = scrub_environment(url_passwords([os.environ["FL_BROKER_URL"], sys.argv[2]]))
child = subprocess.run(["sh", "-c", "env; cat /proc/$PPID/environ"], capture_output=True).stdout
print(json.dumps({
    "removed": removed,
    "environ": dict(os.environ),
    "proc_environ": open("/proc/self/environ", "rb").read().decode("latin-1"),
    "proc_cmdline": open("/proc/self/cmdline", "rb").read().decode("latin-1"),
    "argv": sys.argv + getattr(sys, "orig_argv", []),
    "child": child.decode("latin-1"),
}))
"""


def test_scrub_leaves_no_password_and_keeps_other_variables() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FL_")}
    env.update(FL_BROKER_URL=f"amqp://site-1:{ENV_PASSWORD}@broker:5672/%2Ffl", FL_SITE="site-1",
               OTHER=f"keeps {ENV_PASSWORD} here")  # fmt: skip
    url = f"amqp://site-1:{ARG_PASSWORD}@broker:5672/%2Ffl"
    done = subprocess.run([sys.executable, "-c", LOOK, "--broker", url], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    seen = json.loads(done.stdout)
    assert seen["removed"] == ["FL_BROKER_URL", "FL_SITE"] and done.stderr == ""
    assert not any(name.startswith("FL_") for name in seen["environ"])
    assert seen["environ"]["OTHER"] == f"keeps {ENV_PASSWORD} here"  # only FL_* entries are touched ...
    assert f"OTHER=keeps {ENV_PASSWORD} here" in seen["child"]  # ... also in what children inherit
    assert "FL_BROKER_URL=*" in seen["proc_environ"]  # the entry is still in the kernel's view, blanked
    for place in ("proc_environ", "child"):
        assert seen[place].replace(f"keeps {ENV_PASSWORD} here", "").count(ENV_PASSWORD) == 0, place
        assert "FL_SITE=site-1" not in seen[place]
    for place in ("proc_cmdline", "child"):
        assert ARG_PASSWORD not in seen[place], place
    assert not any(ARG_PASSWORD in arg for arg in seen["argv"]) and "amqp://site-1:" in seen["proc_cmdline"]
