"""Deliveries made by hand, for tests of a receiving end without a broker in between."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fl_broker.transport import Delivery
from fl_broker.transport.memory import QueuedMessage
from fl_broker.transport.memory.connection import make_delivery
from fl_broker.wire import names
from fl_broker.wire.messages import DXO, DataKind, Shareable


@dataclass
class Settlements:
    """How the deliveries made by `delivery()` were settled, in order: ("ack", None) or ("reject", reason)."""

    seen: list[tuple[str, str | None]] = field(default_factory=list)

    def delivery(
        self, body: bytes, *, user_id: str | None = "server", content_type: str | None = names.CONTENT_TYPE
    ) -> Delivery:
        """A delivery of `body` whose settling is recorded here."""
        made = Delivery(body=body, exchange="", routing_key="test", content_type=content_type, user_id=user_id)
        made.settler = lambda action, reason: self.seen.append((action, reason))
        return made


def delivery_of(message: QueuedMessage) -> Delivery:
    """What a consumer of the memory broker is handed for `message` (made the same way; not settleable)."""
    return make_delivery(message, None)


def weights(value: float = 1.0, task_id: str = "run1-train-round0") -> Shareable:
    """A small WEIGHTS Shareable, as a trainer returns it."""
    shareable = DXO(DataKind.WEIGHTS, {"numpy_key": np.full((3, 3), value, np.float32)}).to_shareable()
    shareable.task_id, shareable.task_name = task_id, "train"
    return shareable
