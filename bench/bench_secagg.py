"""The cost of secure aggregation: seconds per round of hello-numpy-secagg against plain hello-numpy-sag,
over RabbitMQ with separate processes (a private node unless --broker is given).

    python bench/bench_secagg.py                       # cases 3x3-2 (10 rounds) and 1M-8 (3 rounds)
    python bench/bench_secagg.py --cases 1M-8 --rounds-big 5

Cases: `3x3-2` = the apps as shipped (3x3 model, 2 clients, 10 rounds); `1M-N` = a 1M-float32 model
(4 MB; the masked update is 8 MB of uint64) with N clients. Round times come from the server's lifecycle
events, as in bench_rounds.py: (training_finished - first round_started) / rounds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rounds import make_app, measure_run  # noqa: E402

from fl_broker.ops.localnode import LocalNode  # noqa: E402

APPS = {"plain": ROOT / "apps" / "hello-numpy-sag", "secagg": ROOT / "apps" / "hello-numpy-secagg"}


def run_case(url: str, kind: str, clients: int, rounds: int, size: int | None) -> tuple[float, str, float]:
    """Mean seconds per round, the run's phase, and the server's peak RSS (MB) of one run."""
    with tempfile.TemporaryDirectory() as tmp:
        app = make_app(Path(tmp), clients=clients, rounds=rounds, size=size, base=APPS[kind])
        times, phase, rss = measure_run(url, app, Path(tmp) / "ws", clients, "WARNING")
    return times[0], phase, rss


def parse_case(case: str, rounds_big: int) -> tuple[int, int, int | None]:
    """(clients, rounds, model size or None) of a case name."""
    if case == "3x3-2":
        return 2, 10, None
    size, clients = case.split("-")
    if not size.endswith("M"):
        raise SystemExit(f"unknown case {case!r}: expected 3x3-2 or <N>M-<clients>, e.g. 1M-8")
    return int(clients), rounds_big, int(float(size[:-1]) * 1_000_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", help="AMQP URL of a broker to use instead of a private node")
    parser.add_argument("--cases", default="3x3-2,1M-8")
    parser.add_argument("--rounds-big", type=int, default=3)
    args = parser.parse_args()
    node = None
    if args.broker is None:
        node = LocalNode(Path(tempfile.mkdtemp(prefix="bench-rabbitmq-")))
        node.start()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    try:
        for case in args.cases.split(","):
            clients, rounds, size = parse_case(case, args.rounds_big)
            seconds = {}
            for kind in ("plain", "secagg"):
                url = node.create_vhost(f"bench-{uuid.uuid4().hex[:8]}") if node else args.broker
                seconds[kind], phase, rss = run_case(url, kind, clients, rounds, size)
                print(
                    f"{case:>6} {kind:>6}: {clients} clients, {rounds} rounds, {phase}: {seconds[kind]:.3f} s/round, "
                    f"server peak RSS {rss:.0f} MB"
                )
            print(
                f"{case:>6}  overhead: x{seconds['secagg'] / seconds['plain']:.2f} "
                f"(+{seconds['secagg'] - seconds['plain']:.3f} s/round)"
            )
    finally:
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if node is not None:
            node.stop()


if __name__ == "__main__":
    main()
