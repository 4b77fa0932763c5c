"""A stand-in for bench/compare/flower_job.py with the same command line, for testing the Flower runner
without Flower. FAKE_JOB in the environment picks what it does: ok, wrong, sleep, fail, sigkill."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "compare"))
from model import initial_weights  # noqa: E402


def write_result(out: Path, size: int, clients: int, rounds: int, final_rounds: int) -> None:
    now = time.time()
    started = [now + i * 0.01 for i in range(rounds)]
    done = [t + 0.005 for t in started]
    record = {"started": started, "done": done, "results": [clients] * rounds, "failures": [0] * rounds}
    (out / "result.json").write_text(json.dumps(record))
    np.save(out / "final.npy", initial_weights(size) + np.float32(final_rounds))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode")
    parser.add_argument("--size", type=int, default=9)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    behaviour = os.environ["FAKE_JOB"]
    if args.mode == "client":
        return
    listener = None
    if args.mode == "server":  # the runner waits for the port before it starts clients
        listener = socket.create_server(("127.0.0.1", args.port))
        time.sleep(0.5)
    if behaviour in ("ok", "wrong"):
        final = args.rounds if behaviour == "ok" else args.rounds - 1
        write_result(args.out, args.size, args.clients, args.rounds, final)
        time.sleep(0.5)  # long enough for a few memory samples
    elif behaviour == "sleep":
        # a process that leaves the job's process group, as Ray's may: it must still be found and stopped
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
        (args.out / "grandchild.pid").write_text(str(child.pid))
        time.sleep(120)
    elif behaviour == "fail":
        print("ValueError: boom", file=sys.stderr)
        sys.exit(1)
    elif behaviour == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if listener is not None:
        listener.close()


if __name__ == "__main__":
    main()
