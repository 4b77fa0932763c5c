"""Active and standby servers on one workspace (shared storage): which one runs the federation, how a standby
takes over when the active one dies, and how a replaced server is kept from acting (fencing).

The broker decides who is active: the server whose connection holds the exclusive queue fl.server.active.
RabbitMQ lets one connection hold it and deletes it when that connection closes or is lost, at once for a
process that died (its socket closes) and after the heartbeat timeout for one that hangs. A standby asks
for it every `poll` seconds and consumes nothing but fl.server.standby (whose consumer count tells the
active server that a standby waits); once it holds the lock it starts as a restarted server would, so a run
that was going resumes from its checkpoint.

Fencing, for a server that was replaced while it hung and then woke up: (1) its consumers are gone with its
connection, and its transport takes the lock again before resuming any of them, or stops for good; (2) each
server that becomes active writes WS/server/active.json (its id and a number one higher than the last), and
an active server checks that file before every lifecycle event (so before each checkpoint commit), before
each engine.json write, and every `poll` seconds. Either check failing ends the process at once, touching
nothing: ending the run at the sites or saving engine.json would undo the new active server's work. The exit
status is 1, so that a supervisor (systemd's Restart=on-failure) starts it again, as a standby.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fl_broker.errors import FlBrokerError
from fl_broker.fl.events import Event
from fl_broker.transport import Subscription, Transport
from fl_broker.wire import names

log = logging.getLogger(__name__)

ACTIVE_FILE = "active.json"  # under the server's workspace: who is active, and since when
FENCED_EXIT = 1


@dataclass(frozen=True)
class ServerIdentity:
    """Who a server process is: a unique id, its host and pid; `epoch` counts the takeovers in a workspace."""

    id: str
    host: str
    pid: int
    since: float = 0.0  # when it became active (time.time())
    epoch: int = 0

    @classmethod
    def of_this_process(cls) -> ServerIdentity:
        """A fresh identity for this process (a restarted process gets another id)."""
        host, pid = socket.gethostname(), os.getpid()
        return cls(id=f"{host}:{pid}:{uuid.uuid4().hex[:8]}", host=host, pid=pid)

    def describe(self) -> str:
        """For logs: host, pid and id."""
        return f"{self.host} pid {self.pid} (id {self.id})"


def read_active(home: Path) -> ServerIdentity | None:
    """The server the workspace names as active, or None if none (or the file is unreadable: a torn read
    on shared storage must not fence anybody)."""
    return _identity_of(home, _read_active_bytes(home))


def _read_active_bytes(home: Path) -> bytes | None:
    """The active file's bytes, None if there is none. Opened anew every time: on shared storage (NFS) an
    open is what makes the client look at the server's copy, not its cached attributes."""
    try:
        with open(home / ACTIVE_FILE, "rb") as file:
            return file.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.debug("cannot read %s: %s", home / ACTIVE_FILE, exc)
        return None


def _identity_of(home: Path, raw: bytes | None) -> ServerIdentity | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
        return ServerIdentity(
            id=str(data["id"]),
            host=str(data["host"]),
            pid=int(data["pid"]),
            since=float(data["since"]),
            epoch=int(data["epoch"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        log.debug("cannot read %s: %s", home / ACTIVE_FILE, exc)
        return None


def write_active(home: Path, identity: ServerIdentity) -> None:
    """Name `identity` the active server (a whole-file replace: readers see the old or the new file)."""
    tmp = home / f"{ACTIVE_FILE}.{identity.pid}.tmp"
    tmp.write_text(json.dumps(asdict(identity)), encoding="utf-8")
    os.replace(tmp, home / ACTIVE_FILE)


def self_fence(reason: str) -> None:
    """End this process at once: another server is active. No cleanup runs (see the module's docstring)."""
    log.critical("%s: this server is no longer the active one; exiting at once, touching nothing", reason)
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # a broken log handler must not keep a replaced server alive
            pass
    os._exit(FENCED_EXIT)


class ActiveRole:
    """This server's claim to be the active one: wait for it as a standby, then keep checking it."""

    def __init__(self, transport: Transport, home: Path, *, poll: float = 0.5) -> None:
        self.transport = transport
        self.home = home
        self.poll = poll
        self.identity = ServerIdentity.of_this_process()
        self.active = threading.Event()
        self._stopped = threading.Event()
        self._next_warning = 0.0
        self._named_me: bytes | None = None  # the active file's bytes when it last named this server

    def wait_until_active(self, stop: threading.Event) -> bool:
        """Wait as a standby until this server holds the lock (True), or until `stop` is set (False)."""
        standby: Subscription | None = None
        try:
            while not stop.is_set():
                if self._try_lock():
                    self._take_over()
                    return True
                if standby is None:
                    standby = self._announce_standby()
                stop.wait(self.poll)
            return False
        finally:
            if standby is not None:
                standby.cancel()  # an active server is no standby any more

    def _try_lock(self) -> bool:
        try:
            return self.transport.hold_lock(names.SERVER_LOCK_QUEUE, self_fence)
        except FlBrokerError as exc:  # e.g. the connection dropped during the request: ask again
            if time.monotonic() >= self._next_warning:  # at most one line every 30 s
                log.warning("cannot ask for the active role (asking again): %s", exc)
                self._next_warning = time.monotonic() + 30
            return False

    def _announce_standby(self) -> Subscription:
        """Consume fl.server.standby (nothing arrives there), so the active server counts this standby."""
        self.transport.declare(names.standby_topology())
        subscription = self.transport.consume(names.SERVER_STANDBY_QUEUE, lambda delivery: delivery.ack())
        active = read_active(self.home)
        log.info(
            "standby: server %s is active; waiting to take over (asking every %.1f s)",
            active.describe() if active else "(unknown)",
            self.poll,
        )
        return subscription

    def _take_over(self) -> None:
        """Holding the lock: name this server the active one in the workspace, then watch that it stays so."""
        previous = read_active(self.home)
        epoch = (previous.epoch if previous else 0) + 1
        self.identity = ServerIdentity(
            self.identity.id, self.identity.host, self.identity.pid, since=time.time(), epoch=epoch
        )
        write_active(self.home, self.identity)
        self.active.set()
        if previous is not None and previous.id != self.identity.id:
            log.info("active server (takeover %d): %s, after %s", epoch, self.identity.describe(), previous.describe())
        else:
            log.info("active server (takeover %d): %s", epoch, self.identity.describe())
        threading.Thread(target=self._watch, name="active-watch", daemon=True).start()

    def check(self) -> None:
        """Fence this process if the workspace names another server active (called before writes)."""
        if not self.active.is_set():
            return
        raw = _read_active_bytes(self.home)
        # The file is read every time (each lifecycle event: 24 a round with 8 sites); only its parsing is
        # skipped while it holds the very bytes that last named this server (any takeover rewrites them).
        if raw is not None and raw == self._named_me:
            return
        current = _identity_of(self.home, raw)
        if current is not None and current.id != self.identity.id:
            self_fence(f"the workspace names {current.describe()} the active server (takeover {current.epoch})")
        if current is not None:
            self._named_me = raw

    def on_event(self, event: Event) -> None:
        """An EventHook: the check before each lifecycle step of a run (a checkpoint commit follows one)."""
        self.check()

    def _watch(self) -> None:
        while not self._stopped.wait(self.poll):
            self.check()

    def status(self) -> dict[str, Any]:
        """For check_status: this (active) server and how many standbys wait."""
        try:
            standbys: int | None = self.transport.consumer_count(names.SERVER_STANDBY_QUEUE)
        except FlBrokerError as exc:
            log.debug("cannot count the standby servers: %s", exc)
            standbys = None
        return {"active_server": asdict(self.identity), "standby_servers": standbys}

    def close(self) -> None:
        """Stop watching and checking (the lock goes with the transport's connection)."""
        self._stopped.set()
        self.active.clear()
