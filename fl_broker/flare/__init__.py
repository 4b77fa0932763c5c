"""fl-broker's FLARE 2.0 compatibility layer: the `nvflare` names FLARE 2.0 apps import, written for fl-broker.

While fl-broker loads and runs an app, `import nvflare...` resolves to this package (unless the real
`nvflare` is installed: see `fl_broker.apps.flare_imports`). Each module here has the path and the names of
its FLARE 2.0 counterpart, with FLARE's semantics carried onto fl-broker's own classes: one Shareable, DXO,
ReturnCode and Signal, shared with the rest of fl-broker.
"""

from __future__ import annotations

__version__ = "2.0-compat"  # the FLARE API level this layer follows
