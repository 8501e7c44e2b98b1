"""What the CRM adapter tests hand an adapter: a call with its deadline, a caller's note, a fresh number."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from aftercall.crm.base import CrmCall, Customer, SummaryNote
from aftercall.deadline import Deadline
from tests.support.stack import unique


def crm_call(seconds: float = 30.0, *, recovering: bool = False) -> CrmCall:
    """One CRM call with ``seconds`` left before the invocation's deadline."""
    return CrmCall(deadline=Deadline.after(seconds), recovering=recovering)


def caller_note(customer: Customer, conversation_id: str | None = None) -> SummaryNote:
    """The summary note of a call from ``customer``: what the caller tests write to find or create them."""
    return SummaryNote(
        conversation_id=conversation_id or unique("conv"),
        customer=customer,
        occurred_at=datetime(2026, 11, 25, 9, 14, 50, tzinfo=UTC),
        summary={"topic": "new service"},
    )


def new_phone(area_code: str = "415") -> str:
    """A North American number no earlier test used (a new caller), in E.164."""
    return f"+1{area_code}{int(time.time() * 1000) % 10_000_000:07d}"
