"""The life of a long-running program (server, worker): start, wait for a stop request or a signal, close."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import NoReturn

from fl_broker.errors import FlBrokerError
from fl_broker.transport import TransportOptions
from fl_broker.wire import names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Relaunch:
    """How to start this program again in this process (same pid): its command line and environment as it
    began. Capture it first thing, before a worker blanks its broker password in both."""

    argv: tuple[str, ...]
    env: dict[str, str]

    @classmethod
    def capture(cls) -> Relaunch:
        """The command line and environment right now."""
        return cls(tuple(sys.orig_argv), dict(os.environ))

    def __call__(self) -> NoReturn:
        """Replace this process by a fresh start of the program (what the admin's `restart` asks for, once
        the program has closed everything). Log files are flushed first."""
        log.info("restarting: %s", re.sub(r"(://[^:/@\s]*):[^@/\s]*@", r"\1:***@", " ".join(self.argv)))
        logging.shutdown()
        os.execve(sys.executable, [sys.executable, *self.argv[1:]], self.env)


def run_until_stopped(
    stop: threading.Event,
    *,
    start: Callable[[], None],
    close: Callable[[], None],
    failure: Callable[[], str | None] = lambda: None,
) -> int:
    """Call `start`, wait until `stop` is set (by a request, SIGTERM or SIGINT) or `failure()` names a reason
    to give up (e.g. a consumer thread died), then call `close`. Returns the exit code: 0, or 1 after a
    failure, so that systemd (Restart=on-failure) starts the program again."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        try:
            start()
        except FlBrokerError as exc:  # e.g. the queues exist as another type: one line, no traceback
            log.critical("cannot start: %s", exc)
            return 2
        while not stop.wait(0.5):
            reason = failure()
            if reason is not None:
                log.critical("cannot go on: %s; exiting so that the program is restarted", reason)
                return 1
        return 0
    finally:
        close()


class _BrokerUrls(argparse.Action):
    """--broker given several times: the URLs joined by commas, replacing (not extending) the default."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object, *_: object
    ) -> None:
        current = getattr(namespace, self.dest, None)
        given = str(values)
        setattr(namespace, self.dest, given if current is self.default or not current else f"{current},{given}")


DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2Ffl"  # a local node's /fl vhost, as localnode makes it


def add_broker_argument(parser: argparse.ArgumentParser, default: str = DEFAULT_BROKER) -> None:
    """--broker URL (env FL_BROKER_URL): one node, or the nodes of a cluster as URL1,URL2,... or the option
    repeated; they are tried in turn on every (re)connect."""
    parser.add_argument(
        "--broker",
        action=_BrokerUrls,
        default=os.environ.get("FL_BROKER_URL", default),
        help="AMQP URL; several nodes of one cluster as URL1,URL2,... or the option repeated (env FL_BROKER_URL)",
    )


def add_queue_type_argument(parser: argparse.ArgumentParser) -> None:
    """--queue-type (env FL_QUEUE_TYPE): every program of a federation must use the same one; the default,
    auto, adopts the type of queues that exist and picks quorum for new ones on a cluster."""
    parser.add_argument(
        "--queue-type",
        choices=names.QUEUE_TYPE_CHOICES,
        default=os.environ.get("FL_QUEUE_TYPE") or names.AUTO,
        help="type of the durable queues: quorum replicates them over a RabbitMQ cluster; auto: quorum when "
        "--broker names several nodes, else classic, and queues that exist keep their type (env FL_QUEUE_TYPE; "
        "default: %(default)s)",
    )


def add_transport_arguments(parser: argparse.ArgumentParser) -> None:
    """Options for message sizes, the queue type and the AMQP heartbeat, shared by the server and the worker
    (env: FL_CHUNK_SIZE, FL_MAX_BODY_SIZE, FL_QUEUE_TYPE, FL_HEARTBEAT)."""
    defaults = TransportOptions()
    add_queue_type_argument(parser)
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=int(os.environ.get("FL_HEARTBEAT") or defaults.heartbeat),
        help="AMQP heartbeat in seconds: a broker node that stops answering (paused, cut off) is left for the "
        "next node after about 1-2x this plus 5 s, and the broker drops a silent program's connection after "
        "about two (which hands a hung server's active role to a standby) (env FL_HEARTBEAT; default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--chunk-size",
        type=_size,
        default=os.environ.get("FL_CHUNK_SIZE", str(defaults.chunk_size)),
        help="bodies above this many bytes travel as ordered chunks (suffixes K, M, G; default: %(default)s)",
    )
    parser.add_argument(
        "--max-body-size",
        type=_size,
        default=os.environ.get("FL_MAX_BODY_SIZE", str(defaults.max_body_size)),
        help="largest message body sent or accepted (suffixes K, M, G; default: %(default)s)",
    )


def transport_options(args: argparse.Namespace, client_name: str) -> TransportOptions:
    """TransportOptions from the options of add_transport_arguments, publishing as `client_name`."""
    return TransportOptions(
        chunk_size=args.chunk_size,
        max_body_size=args.max_body_size,
        client_name=client_name,
        queue_type=args.queue_type,
        heartbeat=args.heartbeat,
    )


def _size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        value = int(float(number) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 65536, 64K, 8M)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a size must be positive, got {text!r}")
    return value
