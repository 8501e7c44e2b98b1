"""The invocation's X-Ray trace header, handed to EventBridge so one call is one trace.

Lambda puts the active trace in ``_X_AMZN_TRACE_ID`` for each invocation. Ingest passes it as
the PutEvents entry's ``TraceHeader``; EventBridge hands it to the rule's target, and the
EndHandler (``Tracing: Active``) continues that trace: Ingest → EventBridge → EndHandler in one
X-Ray trace. A header X-Ray would refuse is not sent (EventBridge would drop it anyway).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from aftercall.settings import trace_header

#: ``Root=1-<8 hex>-<24 hex>`` then ``;Key=value`` parts (Parent, Sampled, Lineage...).
_HEADER = re.compile(r"^Root=1-[0-9a-f]{8}-[0-9a-f]{24}(;[A-Za-z]+=[^;\s]+)*$")
#: PutEventsRequestEntry.TraceHeader is at most 500 characters.
MAX_TRACE_HEADER = 500


def current_trace_header(env: Mapping[str, str] | None = None) -> str | None:
    """The running invocation's trace header, or ``None`` outside a traced invocation."""
    value = trace_header(env)
    if len(value) > MAX_TRACE_HEADER or not _HEADER.match(value):
        return None
    return value
