"""`nvflare.apis.shareable`: FLARE's Shareable and make_reply are fl-broker's own (one class for both)."""

from __future__ import annotations

from fl_broker.wire.messages import Shareable, make_reply

__all__ = ["ReservedHeaderKey", "Shareable", "make_reply"]


class ReservedHeaderKey:
    """FLARE's reserved header names. fl-broker's Shareable keeps these as typed fields, so they are here for
    code that names them; `get_header` does not find the fields under them."""

    HEADERS = "__headers__"
    TOPIC = "__topic__"
    RC = "__rc__"
    COOKIE_JAR = "__cookie_jar__"
    PEER_PROPS = "__peer_props__"
    REPLY_IS_LATE = "__reply_is_late__"
    TASK_NAME = "__task_name__"
    TASK_ID = "__task_id__"
    WORKFLOW = "__workflow__"
    CONTENT_TYPE = "__content_type__"
