"""FLARE's ExcludeVars: leave variables out of what is sent (e.g. a site's private layers)."""

from __future__ import annotations

import logging
import re
from typing import ClassVar

from fl_broker.fl.filters import FilterContext
from fl_broker.privacy.dxo_filter import DXOFilter
from fl_broker.wire.messages import DXO, DataKind

log = logging.getLogger(__name__)


class ExcludeVars(DXOFilter):
    """Removes variables from the DXO's data. `exclude_vars` (FLARE's argument) is a list of names, removed
    where they match exactly, or a string, a regular expression removing every name it matches anywhere
    (`re.search`); None or "" removes nothing. Applies to every DXO kind, as FLARE 2.0's does."""

    passes_kinds: ClassVar[frozenset[DataKind]] = frozenset()

    def __init__(self, exclude_vars: list[str] | str | None = None) -> None:
        self.names: frozenset[str] = frozenset()
        self.pattern: re.Pattern[str] | None = None
        if isinstance(exclude_vars, list):
            if not all(isinstance(name, str) for name in exclude_vars):
                raise ValueError(f"exclude_vars: expected names (str), got {exclude_vars!r}")
            self.names = frozenset(exclude_vars)
        elif isinstance(exclude_vars, str) and exclude_vars:
            try:
                self.pattern = re.compile(exclude_vars)
            except re.error as exc:
                raise ValueError(f"exclude_vars: {exclude_vars!r} is not a regular expression: {exc}") from exc
        elif exclude_vars not in (None, ""):
            raise ValueError(f"exclude_vars: expected a list of names or a regex string, got {exclude_vars!r}")

    def excluded(self, name: str) -> bool:
        """Whether variable `name` is left out."""
        return name in self.names or (self.pattern is not None and self.pattern.search(name) is not None)

    def filter_dxo(self, dxo: DXO, fl_ctx: FilterContext) -> DXO:
        """`dxo` without the excluded variables (its meta unchanged)."""
        kept = {name: value for name, value in dxo.data.items() if not self.excluded(name)}
        if self.pattern is not None and len(kept) == len(dxo.data):
            log.warning(
                "ExcludeVars: no variable matches %r in %s's %s",
                self.pattern.pattern,
                fl_ctx.site_name,
                fl_ctx.task_name,
            )
        log.debug("ExcludeVars: %d of %d variables left out", len(dxo.data) - len(kept), len(dxo.data))
        return DXO(data_kind=dxo.data_kind, data=kept, meta=dxo.meta)
