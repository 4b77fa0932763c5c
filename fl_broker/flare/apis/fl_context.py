"""`nvflare.apis.fl_context`: FLARE's FLContext, the property bag handed to every component call.

A property is private or public, sticky or not. Sticky properties are shared by every context of the same
run and participant (one store per run, kept by the engine), so a value a workflow sets sticky is seen by
the contexts made after it; non-sticky ones live in the one context. A key keeps the kind it was first set
with: setting it again as another kind is refused with a warning, as in FLARE.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from fl_broker.flare.apis.fl_constant import ReservedKey

log = logging.getLogger(__name__)


@dataclass
class _Prop:
    value: Any
    private: bool
    sticky: bool


class PropStore:
    """The sticky properties of one run on one participant, shared by its contexts."""

    def __init__(self) -> None:
        self.props: dict[str, _Prop] = {}
        self.lock = threading.Lock()


class FLContext:
    """Properties for one call (or one event), over the run's shared sticky ones."""

    def __init__(self, sticky: PropStore | None = None) -> None:
        self._local: dict[str, _Prop] = {}
        self._sticky = sticky if sticky is not None else PropStore()

    def set_prop(self, key: str, value: Any, private: bool = True, sticky: bool = True) -> bool:
        """Set `key`; False (and a warning) if it exists with another private/sticky kind."""
        if not isinstance(key, str):
            raise ValueError(f"a property key must be a str, got {type(key).__name__}")
        with self._sticky.lock:
            existing = self._local.get(key) or self._sticky.props.get(key)
            if existing is not None and (existing.private, existing.sticky) != (private, sticky):
                log.warning(
                    "property %s exists as %s, cannot set it as %s",
                    key,
                    _kind(existing),
                    _kind(_Prop(0, private, sticky)),
                )
                return False
            (self._sticky.props if sticky else self._local)[key] = _Prop(value, private, sticky)
        return True

    def get_prop(self, key: str, default: Any = None) -> Any:
        """The value of `key`, or `default`."""
        with self._sticky.lock:
            prop = self._local.get(key) or self._sticky.props.get(key)
        return default if prop is None else prop.value

    def get_prop_detail(self, key: str) -> dict[str, Any] | None:
        """`{"value", "private", "sticky"}` of `key`, or None."""
        with self._sticky.lock:
            prop = self._local.get(key) or self._sticky.props.get(key)
        return None if prop is None else {"value": prop.value, "private": prop.private, "sticky": prop.sticky}

    def remove_prop(self, key: str) -> None:
        """Forget `key` (reserved keys, starting with "__", stay)."""
        if not isinstance(key, str) or key.startswith("__"):
            return
        with self._sticky.lock:
            self._local.pop(key, None)
            self._sticky.props.pop(key, None)

    def public_key_exists(self, key: str) -> bool:
        """Whether `key` is set as a public property."""
        detail = self.get_prop_detail(key)
        return detail is not None and not detail["private"]

    def get_all_public_props(self) -> dict[str, Any]:
        """Every public property, by key."""
        with self._sticky.lock:
            merged = {**self._sticky.props, **self._local}
        return {key: prop.value for key, prop in merged.items() if not prop.private}

    def get_engine(self) -> Any:
        """The engine of this participant's run (get_workspace(), get_component(id), fire_event ...)."""
        return self.get_prop(ReservedKey.ENGINE)

    def get_run_number(self) -> int | None:
        """The run number."""
        run: int | None = self.get_prop(ReservedKey.RUN_NUM)
        return run

    def set_run_number(self, run_number: int) -> bool:
        """Set the run number (public, sticky)."""
        return self.set_prop(ReservedKey.RUN_NUM, run_number, private=False)

    def get_identity_name(self) -> str:
        """This participant's name: the site, or "server"."""
        return str(self.get_prop(ReservedKey.IDENTITY_NAME, ""))

    def get_run_abort_signal(self) -> Any:
        """The run's abort Signal."""
        return self.get_prop(ReservedKey.RUN_ABORT_SIGNAL)

    def set_peer_context(self, ctx: FLContext) -> None:
        """The other side's context (fl-broker sends none: the peer's props are not on the wire)."""
        self.set_prop(ReservedKey.PEER_CTX, ctx, private=True, sticky=False)

    def get_peer_context(self) -> FLContext | None:
        """The other side's context, if one was set."""
        peer: FLContext | None = self.get_prop(ReservedKey.PEER_CTX)
        return peer

    def __enter__(self) -> FLContext:
        return self

    def __exit__(self, *exc: object) -> None:
        return None  # sticky props are in the shared store already

    def __str__(self) -> str:
        with self._sticky.lock:
            merged = {**self._sticky.props, **self._local}
        return " ".join(f"{key}: {type(prop.value).__name__}" for key, prop in merged.items())


def _kind(prop: _Prop) -> str:
    return f"{'private' if prop.private else 'public'}:{'sticky' if prop.sticky else 'non-sticky'}"
