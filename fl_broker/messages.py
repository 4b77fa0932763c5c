"""Kept so that apps written against fl-broker 0.1 import `fl_broker.messages` unchanged; new code imports
`fl_broker.wire.messages`."""

from __future__ import annotations

from fl_broker.wire.messages import DXO, DataKind, Header, MetaKey, ReturnCode, Shareable, from_shareable, make_reply

__all__ = ["DXO", "DataKind", "Header", "MetaKey", "ReturnCode", "Shareable", "from_shareable", "make_reply"]
