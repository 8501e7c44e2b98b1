"""Realistic ``Conversation Ended`` events, as the platform (or ``aftercall emit``) sends them.

``conversation_ended(**overrides)`` returns a full EventBridge envelope. Keyword overrides
replace fields of ``detail``; pass :data:`DROP` to remove one, ``envelope={...}`` to change the
envelope (``"detail-type"``, ``id``, ``time`` ...). Every call gets a fresh conversation id and
event id unless given, so tests never share CRM or ledger state by accident.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

#: The seeded CRM contact every default event is with (the caller of an inbound call).
CUSTOMER_PHONE: Final = "+14155550123"
CUSTOMER_EMAIL: Final = "jane.doe@example.com"
#: The agent's own number (callee of inbound calls, caller of outbound ones).
AGENT_NUMBER: Final = "+18005550100"
ACCOUNT: Final = "123456789012"
REGION: Final = "us-east-1"
SOURCE: Final = "aftercall.platform"


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


#: Pass as an override to remove the field from the event.
DROP: Final = _Drop()

SUPPORT_STATE: Final[Mapping[str, Any]] = {
    "user_id": "cust-0123",
    "intent": "billing_dispute",
    "last_topic": "billing",
    "sentiment": "Negative",
    "resolution": "unresolved",
    "support_needed": True,
    "ticket_subject": "Charged twice for the November invoice",
    "issue_description": "Caller sees two charges of 49.00 on 2026-11-02 and wants one refunded.",
    "ticket_priority": "HIGH",
    "verified_identity": True,
    "turns": 14,
    "collected": {"invoice_number": "INV-2026-1102", "card_last4": "4821"},
}

RESOLVED_STATE: Final[Mapping[str, Any]] = {
    "user_id": "cust-0123",
    "intent": "delivery_status",
    "last_topic": "delivery status",
    "sentiment": "Positive",
    "resolution": "resolved",
    "support_needed": False,
    "verified_identity": True,
    "turns": 6,
}

OUTBOUND_STATE: Final[Mapping[str, Any]] = {
    "campaign": "renewal-2026-q4",
    "last_topic": "renewal",
    "sentiment": "Positive",
    "disposition": "interested",
    "callback_window": "weekday mornings",
}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_conversation_id() -> str:
    return f"conv-{datetime.now(UTC):%Y%m%d}-{uuid.uuid4().hex[:12]}"


def conversation_detail(**overrides: Any) -> dict[str, Any]:
    """The ``detail`` of an inbound voice call from the seeded customer that ended normally."""
    ended = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    duration = 312
    detail: dict[str, Any] = {
        "schema_version": "1.0",
        "conversation_id": new_conversation_id(),
        "environment": "sandbox",
        "channel": "voice",
        "direction": "inbound",
        "started_at": _iso(ended - timedelta(seconds=duration)),
        "ended_at": _iso(ended),
        "duration_seconds": duration,
        "caller": CUSTOMER_PHONE,
        "callee": AGENT_NUMBER,
        "agent_id": "agent-support-eu",
        "ended_reason": "customer_hangup",
        "ended_reason_raw": "customer-ended-call",
        "state": copy.deepcopy(dict(RESOLVED_STATE)),
    }
    for key, value in overrides.items():
        if value is DROP:
            detail.pop(key, None)
        else:
            detail[key] = copy.deepcopy(value)
    return detail


def conversation_ended(*, envelope: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """A full EventBridge ``Conversation Ended`` event around :func:`conversation_detail`."""
    detail = conversation_detail(**overrides)
    event: dict[str, Any] = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Conversation Ended",
        "source": SOURCE,
        "account": ACCOUNT,
        "time": _iso(datetime.now(UTC)),
        "region": REGION,
        "resources": [],
        "detail": detail,
    }
    for key, value in (envelope or {}).items():
        if value is DROP:
            event.pop(key, None)
        else:
            event[key] = copy.deepcopy(value)
    return event


def support_call_ended(**overrides: Any) -> dict[str, Any]:
    """An inbound call the agent could not resolve: the End function opens a ticket."""
    return conversation_ended(**{"state": dict(SUPPORT_STATE), "ended_reason": "completed", **overrides})


def outbound_call_ended(**overrides: Any) -> dict[str, Any]:
    """An outbound sales call to the seeded customer, with a disposition in its state."""
    fields: dict[str, Any] = {
        "direction": "outbound",
        "caller": AGENT_NUMBER,
        "callee": CUSTOMER_PHONE,
        "agent_id": "agent-sales-outbound",
        "ended_reason": "completed",
        "ended_reason_raw": None,
        "state": dict(OUTBOUND_STATE),
    }
    fields.update(overrides)
    return conversation_ended(**fields)


def re_emitted(event: Mapping[str, Any]) -> dict[str, Any]:
    """The same conversation sent again: EventBridge gives it a new id and time, detail unchanged."""
    again = copy.deepcopy(dict(event))
    again["id"] = str(uuid.uuid4())
    again["time"] = _iso(datetime.now(UTC) + timedelta(seconds=1))
    return again
