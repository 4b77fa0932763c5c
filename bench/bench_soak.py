"""Soak: many rounds, many workers, a 1M-float32 model; server memory growth and leftovers at the end.

    python bench/bench_soak.py [--rounds 200] [--clients 8] [--size 1000000]

Prints the server's RSS after round 20 and at the end, thread counts, queue depths and connections left.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_rounds import make_app, proc_status, start_federation, stop_processes  # noqa: E402

from fl_broker.apps.archive import pack_app  # noqa: E402
from fl_broker.cli.flow import shutdown_all, wait_for_clients  # noqa: E402
from fl_broker.ops.localnode import LocalNode  # noqa: E402
from fl_broker.protocol.control import RequestClient  # noqa: E402
from fl_broker.transport import connect  # noqa: E402
from fl_broker.wire import names  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep the workspace (with INFO logs) in this folder")
    args = parser.parse_args()
    node = LocalNode(Path(tempfile.mkdtemp(prefix="soak-rabbitmq-")))
    node.start()
    vhost = "soak"
    url = node.create_vhost(vhost)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        app = make_app(work, clients=args.clients, rounds=args.rounds, size=args.size)
        level = "INFO" if args.keep else "WARNING"
        server, *workers = start_federation(work / "ws", url, args.clients, level)
        transport = connect(url)
        admin = RequestClient(transport)

        def call(command: str, **kw):
            return admin.call(names.SERVER, command, kw, timeout=60)

        try:
            wait_for_clients(admin, args.clients, timeout=120, on_status=lambda s: None)
            call("upload_app", app=app.name, archive=pack_app(app))
            call("set_run_number", run=1)
            call("deploy_app", app=app.name, target="all")
            started = time.monotonic()
            call("start_app", target="all")
            rss_20 = threads_20 = None
            while True:
                status = call("check_status", target="server")
                current = status["current_round"] or 0
                if rss_20 is None and current >= 20:
                    rss_20, threads_20 = proc_status(server.pid, "VmRSS"), proc_status(server.pid, "Threads")
                if status["engine_status"] == "stopped" and status["phase"] in ("finished", "failed", "aborted"):
                    break
                time.sleep(0.5)
            seconds = time.monotonic() - started
            time.sleep(2)  # let the last events and acks settle
            rss_end, threads_end = proc_status(server.pid, "VmRSS"), proc_status(server.pid, "Threads")
            peak = proc_status(server.pid, "VmHWM")
            # rabbitmqctl counts exactly; the management API's numbers lag by its 5 s statistics interval
            listing = node.ctl("list_queues", "-p", vhost, "name", "messages", "--no-table-headers", "--quiet")
            queues = [
                {"name": name, "messages": int(count)}
                for name, count in (line.split() for line in listing.splitlines() if line.strip())
            ]
            connections = node.api("GET", f"/api/vhosts/{urllib.parse.quote(vhost, safe='')}/connections")
            worker_threads = [proc_status(w.pid, "Threads") for w in workers]
            print(
                f"soak: {args.rounds} rounds, {args.clients} clients, {args.size} float32: {status['phase']} "
                f"in {seconds:.1f} s ({seconds / args.rounds * 1000:.0f} ms/round)"
            )
            growth = (rss_end - rss_20) / rss_20 * 100 if rss_20 else float("nan")
            print(
                f"server RSS after round 20: {rss_20 / 1024:.1f} MB, at the end: {rss_end / 1024:.1f} MB "
                f"(growth {growth:+.1f}%), peak {peak / 1024:.1f} MB"
            )
            print(
                f"server threads after round 20: {threads_20}, at the end: {threads_end}; worker threads: "
                f"{worker_threads}"
            )
            busy = {q["name"]: q.get("messages", 0) for q in queues if q.get("messages", 0)}
            print(f"queues with messages at the end: {busy or 'none'} (of {len(queues)} queues)")
            print(f"connections open: {len(connections)} (expected {args.clients + 2}: server, workers, this admin)")
            shutdown_all(admin)
        finally:
            admin.close()
            transport.close()
            stop_processes([server, *workers])
            node.stop()


if __name__ == "__main__":
    main()
