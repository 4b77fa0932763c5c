"""`...pt.pt_fed_utils`: where FLARE 2.0 keeps PTModelPersistenceFormatManager."""

from __future__ import annotations

from fl_broker.flare.app_common.pt.pt_model_persistence_format_manager import PTModelPersistenceFormatManager

__all__ = ["PTModelPersistenceFormatManager"]
