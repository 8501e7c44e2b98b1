"""The CRM interface every adapter implements, and the requests it takes.

Each request carries the conversation id, which adapters use as their idempotency key where
the CRM allows it (Salesforce external id, Zendesk ``Idempotency-Key``) and as a marker they
can search for where it does not (HubSpot).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from aftercall.deadline import Deadline

if TYPE_CHECKING:
    from aftercall.crm.callers import CallerMatch

TicketPriority = Literal["LOW", "MEDIUM", "HIGH", "URGENT"]

#: Outbound call outcomes the runtime understands, and the lead status each one sets.
DISPOSITIONS: dict[str, str] = {
    "connected": "CONNECTED",
    "interested": "IN_PROGRESS",
    "info_requested": "IN_PROGRESS",
    "meeting_booked": "OPEN_DEAL",
    "converted": "OPEN_DEAL",
    "callback_requested": "BAD_TIMING",
    "no_answer": "ATTEMPTED_TO_CONTACT",
    "voicemail": "ATTEMPTED_TO_CONTACT",
    "busy": "ATTEMPTED_TO_CONTACT",
    "not_interested": "UNQUALIFIED",
    "wrong_number": "UNQUALIFIED",
    "do_not_call": "UNQUALIFIED",
}


@dataclass(frozen=True)
class Customer:
    """Who the conversation was with, as the CRM can look them up (``phone`` in E.164 when readable).

    The name fields only fill a new caller's record; they are not part of who the caller is.
    """

    phone: str | None
    email: str | None
    first_name: str | None = field(default=None, compare=False)
    last_name: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SummaryNote:
    conversation_id: str
    customer: Customer
    occurred_at: datetime
    summary: dict[str, Any]


@dataclass(frozen=True)
class SupportTicket:
    conversation_id: str
    customer: Customer
    subject: str
    description: str
    priority: TicketPriority = "MEDIUM"


@dataclass(frozen=True)
class Disposition:
    conversation_id: str
    customer: Customer
    disposition: str
    note: str | None = None

    @property
    def lead_status(self) -> str:
        return DISPOSITIONS[self.disposition]


@dataclass(frozen=True)
class CrmCall:
    """Per-call context: the time budget, and whether an earlier attempt may have half-done it.

    ``unanswered_write_at`` (from an earlier attempt) and ``unanswered_writes`` (this one's) carry
    the unanswered-write protocol (:mod:`aftercall.crm.http`) across attempts, in epoch seconds.
    """

    deadline: Deadline
    recovering: bool = False
    unanswered_write_at: float | None = None
    unanswered_writes: list[float] = field(default_factory=list, compare=False)

    @property
    def last_unanswered_write(self) -> float | None:
        """When the latest write of this action, by this attempt or an earlier one, went unanswered."""
        times = list(self.unanswered_writes)
        if self.unanswered_write_at is not None:
            times.append(self.unanswered_write_at)
        return max(times, default=None)


@dataclass(frozen=True)
class CrmRecord:
    """What the CRM created or updated: kept in the action ledger as the call→object mapping."""

    kind: str
    object_id: str
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "object_id": self.object_id, **self.extra}


class Crm(Protocol):
    """What the runtime needs from a CRM. Every method must be safe to call again for the same
    conversation: with ``call.recovering`` set, it first looks for what an earlier attempt made."""

    name: str

    def log_summary(self, note: SummaryNote, call: CrmCall) -> CrmRecord: ...

    def open_ticket(self, ticket: SupportTicket, call: CrmCall) -> CrmRecord: ...

    def log_disposition(self, disposition: Disposition, call: CrmCall) -> CrmRecord: ...


@runtime_checkable
class FindsCallers(Protocol):
    """A CRM that resolves callers (finds or, by ``UnknownCallerPolicy``, creates their record)."""

    name: str

    def caller(self, customer: Customer, conversation_id: str, call: CrmCall) -> CallerMatch: ...
