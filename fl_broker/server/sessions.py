"""The server's registry of client sites: sessions, heartbeats, and who counts as gone."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ClientRecord:
    """What the server knows of one site."""

    site: str
    session: str
    registered_at: float  # wall clock, for display
    last_seen: float  # monotonic
    last_heartbeat: float  # wall clock, for display
    status: dict[str, Any] = field(default_factory=dict)  # the worker's own report: app, run, status


class ClientRegistry:
    """Registered sites. A site is alive while it heartbeats within `grace` seconds; re-registering
    replaces its old session."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._records: dict[str, ClientRecord] = {}
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
            record.last_seen = time.monotonic()
            record.last_heartbeat = time.time()
            _take_newer(record, status)
            return True

    def update_status(self, site: str, status: dict[str, Any]) -> None:
        """Take a status a site reported in a reply."""
        with self._lock:
            if site in self._records:
                _take_newer(self._records[site], status)

    def remove(self, site: str) -> bool:
        """Forget `site`; False if it was not registered."""
        with self._lock:
            return self._records.pop(site, None) is not None

    def alive(self) -> list[str]:
        """Sites that heartbeated within the grace period, sorted."""
        cutoff = time.monotonic() - self.grace
        with self._lock:
            return sorted(site for site, r in self._records.items() if r.last_seen >= cutoff)

    def started(self, run: int | None) -> list[str]:
        """Alive sites whose client app for `run` is started."""
        cutoff = time.monotonic() - self.grace
        with self._lock:
            return sorted(
                site
                for site, r in self._records.items()
                if r.last_seen >= cutoff and r.status.get("status") == "started" and r.status.get("run") == run
            )

    def snapshot(self) -> list[dict[str, Any]]:
        """One JSON-able row per registered site."""
        cutoff = time.monotonic() - self.grace
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
