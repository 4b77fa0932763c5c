"""Publish-to-consumed throughput of the transports for large bodies.

    python bench/bench_transport.py [--broker URL] [--transport rabbitmq|memory|both]
                                    [--sizes 1,16,100,300] [--chunk-sizes 1,4,8,16] [--repeat 3]

Without --broker a private RabbitMQ node is started (fl_broker.ops.localnode) and stopped afterwards. The
publisher and the consumer are separate transports (separate connections). Times run from the start of
publish() to the handler receiving the reassembled body; the best of --repeat runs is reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fl_broker.transport import Delivery, Transport, TransportOptions  # noqa: E402
from fl_broker.wire.names import ExchangeSpec, QueueSpec, Topology  # noqa: E402

MiB = 1024 * 1024
EXCHANGE, QUEUE, KEY = "fl.bench", "fl.bench.q", "bench"
TOPOLOGY = Topology((ExchangeSpec(EXCHANGE, "direct"),), (QueueSpec(QUEUE, ((EXCHANGE, KEY),)),))


def measure(connect: Callable[[], Transport], size_mib: int, repeat: int) -> float:
    """Best MiB/s over `repeat` publish-to-consumed runs of one body of `size_mib` MiB."""
    publisher, consumer = connect(), connect()
    publisher.declare(TOPOLOGY)
    consumer.declare(TOPOLOGY)
    received: list[float] = []
    arrived = threading.Event()

    def handler(delivery: Delivery) -> None:
        received.append(time.perf_counter())
        assert len(delivery.body) == size_mib * MiB
        delivery.ack()
        arrived.set()

    subscription = consumer.consume(QUEUE, handler)
    body = bytes(size_mib * MiB)
    best = 0.0
    try:
        for _ in range(repeat):
            arrived.clear()
            start = time.perf_counter()
            publisher.publish(EXCHANGE, KEY, body)
            if not arrived.wait(300):
                raise RuntimeError("no delivery within 300 s")
            best = max(best, size_mib / (received[-1] - start))
    finally:
        subscription.cancel()
        publisher.close()
        consumer.close()
    return best


@contextmanager
def broker_url(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from fl_broker.ops.localnode import LocalNode

    with tempfile.TemporaryDirectory(prefix="fl-bench-") as tmp, LocalNode(Path(tmp)) as node:
        yield node.amqp_url()


def connector(kind: str, url: str, options: TransportOptions) -> Callable[[], Transport]:
    if kind == "memory":
        from fl_broker.transport.memory import MemoryBroker

        broker = MemoryBroker()
        return lambda: broker.connect(user="guest", options=options)
    from fl_broker.transport.rabbitmq import RabbitMQTransport

    return lambda: RabbitMQTransport(url, options=options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", help="amqp:// URL (default: start a private node)")
    parser.add_argument("--transport", choices=["rabbitmq", "memory", "both"], default="rabbitmq")
    parser.add_argument("--sizes", default="1,16,100,300", help="body sizes in MiB")
    parser.add_argument("--chunk-sizes", default="4", help="chunk sizes in MiB to compare")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    chunk_sizes = [int(s) for s in args.chunk_sizes.split(",")]
    kinds = ["rabbitmq", "memory"] if args.transport == "both" else [args.transport]
    with broker_url(args.broker if "rabbitmq" in kinds else "memory://") as url:
        print(f"{'transport':<10} {'chunk MiB':>9} " + " ".join(f"{f'{s} MiB':>9}" for s in sizes))
        for kind in kinds:
            for chunk in chunk_sizes:
                options = dataclasses.replace(TransportOptions(), chunk_size=chunk * MiB, connect_attempts=5)
                rates = [measure(connector(kind, url, options), size, args.repeat) for size in sizes]
                print(f"{kind:<10} {chunk:>9} " + " ".join(f"{r:>9.0f}" for r in rates), flush=True)
        print(f"(MiB/s, publish start to handler, best of {args.repeat})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
