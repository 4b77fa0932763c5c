"""A raw delivery as pika handed it to the I/O thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pika

from fl_broker.transport.chunking import Pieces


@dataclass
class Incoming:
    """One message as pika delivered it, with the channel generation it came on."""

    generation: int
    tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    properties: pika.BasicProperties
    body: bytes | memoryview | Pieces | None  # Pieces: a spooled chunk as the frames it arrived in

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.properties.headers or {})

    @property
    def sender(self) -> str:
        """Whom per-sender bounds count this message against: the broker-checked login, and the client name
        the publisher gave (participants sharing one login are trusted alike, but counted apart)."""
        return f"{self.properties.user_id or ''}/{self.properties.app_id or ''}"
