"""The server's registry of client sites: sessions, heartbeats, and who counts as gone."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class ClientRecord:
    """What the server knows of one site."""

    site: str
    session: str
    registered_at: float  # wall clock, for display
    last_seen: float  # monotonic
    last_heartbeat: float  # wall clock, for display
    status: dict[str, Any] = field(default_factory=dict)  # the worker's own report: app, run, status
    status_at: float = field(default_factory=time.monotonic)  # when `status` was taken (monotonic)
    gone: bool = False  # past its grace period (logged once; cleared by its next heartbeat)


class ClientRegistry:
    """Registered sites. A site is alive while it heartbeats within `grace` seconds; re-registering
    replaces its old session."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._records: dict[str, ClientRecord] = {}
        self._held: dict[str, int] = {}  # site -> how many start_app fan-outs to it are in flight
        self._lock = threading.Lock()

    def register(self, site: str, session: str, status: dict[str, Any]) -> bool:
        """Record a (new) session of `site`; True if it replaced an earlier session."""
        now = time.monotonic()
        with self._lock:
            replaced = site in self._records and self._records[site].session != session
            self._records[site] = ClientRecord(site, session, time.time(), now, time.time(), dict(status))
        return replaced

    def heartbeat(self, site: str, session: str, status: dict[str, Any]) -> bool:
        """Refresh `site`; False if that session is unknown (the worker should register again)."""
        with self._lock:
            record = self._records.get(site)
            if record is None or record.session != session:
                return False
            if record.gone:
                log.info("%s is back: heartbeating again after %.1f s", site, time.monotonic() - record.last_seen)
                record.gone = False
            record.last_seen = time.monotonic()
            record.last_heartbeat = time.time()
            _take_newer(record, status)
            return True

    def status_of(self, site: str) -> dict[str, Any]:
        """The newest status `site` reported (heartbeat or reply); empty if it is not registered."""
        with self._lock:
            record = self._records.get(site)
            return dict(record.status) if record is not None else {}

    def update_status(self, site: str, status: dict[str, Any]) -> None:
        """Take a status a site reported in a reply."""
        with self._lock:
            if site in self._records:
                _take_newer(self._records[site], status)

    def report(self, site: str) -> tuple[dict[str, Any], float] | None:
        """`site`'s latest own report and when it was taken (monotonic), or None if it is not registered."""
        with self._lock:
            record = self._records.get(site)
            return None if record is None else (dict(record.status), record.status_at)

    def remove(self, site: str, reason: str = "removed") -> bool:
        """Forget `site` (logged with `reason`, e.g. "shut down"); False if it was not registered."""
        with self._lock:
            removed = self._records.pop(site, None) is not None
        if removed:
            log.info("%s left: %s", site, reason)
        return removed

    def alive(self) -> list[str]:
        """Sites that heartbeated within the grace period, sorted."""
        cutoff = self._cutoff()
        with self._lock:
            return sorted(site for site, r in self._records.items() if r.last_seen >= cutoff)

    def _cutoff(self) -> float:
        """The oldest last_seen that still counts as alive; logs, once each, the sites that just went past it."""
        now = time.monotonic()
        cutoff = now - self.grace
        with self._lock:
            newly_gone = [r for r in self._records.values() if r.last_seen < cutoff and not r.gone]
            for record in newly_gone:
                record.gone = True
        for record in newly_gone:
            log.warning(
                "%s is gone: no heartbeat for %.1f s (grace %g s); it counts again once it heartbeats",
                record.site,
                now - record.last_seen,
                self.grace,
            )
        return cutoff

    def started(self, run: int | None) -> list[str]:
        """Alive sites whose client app for `run` is started (a held site not yet: see `holding`)."""
        cutoff = self._cutoff()
        with self._lock:
            return sorted(
                site
                for site, r in self._records.items()
                if r.last_seen >= cutoff
                and r.status.get("status") == "started"
                and r.status.get("run") == run
                and site not in self._held
            )

    @contextmanager
    def holding(self, sites: list[str], run: int | None) -> Iterator[None]:
        """While one `start_app` goes to `sites`, none of those not yet started for `run` counts as started,
        so a workflow waiting for min_clients begins with every site that answers, not with the first few
        (a site counts once the fan-out has all its answers, or has given up on the slow ones)."""
        with self._lock:
            held = [
                site
                for site in sites
                if site not in self._records
                or self._records[site].status.get("status") != "started"
                or self._records[site].status.get("run") != run
            ]
            for site in held:
                self._held[site] = self._held.get(site, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                for site in held:
                    self._held[site] -= 1
                    if not self._held[site]:
                        del self._held[site]

    def snapshot(self) -> list[dict[str, Any]]:
        """One JSON-able row per registered site."""
        cutoff = self._cutoff()
        with self._lock:
            return [
                {
                    "site": r.site,
                    "last_heartbeat": round(r.last_heartbeat, 3),
                    "seconds_since_heartbeat": round(time.monotonic() - r.last_seen, 1),
                    "alive": r.last_seen >= cutoff,
                    "app": r.status.get("app"),
                    "run": r.status.get("run"),
                    "status": r.status.get("status"),
                    "task": r.status.get("task"),
                }
                for r in sorted(self._records.values(), key=lambda r: r.site)
            ]


def _take_newer(record: ClientRecord, status: dict[str, Any]) -> None:
    """Keep `status` unless the record already has a newer report (a heartbeat queued behind a reply)."""
    seq, known = status.get("seq"), record.status.get("seq")
    if isinstance(seq, int) and isinstance(known, int) and seq < known:
        return
    record.status = dict(status)
    record.status_at = time.monotonic()
