"""fl-broker: federated learning (Scatter-and-Gather) whose server and clients talk through RabbitMQ."""

from __future__ import annotations

from fl_broker.wire.messages import DXO, DataKind, MetaKey, ReturnCode, Shareable, from_shareable

__all__ = ["DXO", "DataKind", "MetaKey", "ReturnCode", "Shareable", "from_shareable"]
__version__ = "0.1.0"
