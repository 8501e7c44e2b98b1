"""Realistic synthetic ``Conversation Ended`` details, for ``aftercall emit --generate`` and tests.

Customers come from a fixed, seeded directory (:data:`CUSTOMERS`) that the local stack also
loads into its fake CRM, so generated calls find their contact. As in a real CRM, the directory's
numbers are stored as people typed them (:attr:`SampleCustomer.typed_phone`: E.164, ``(415) 555-0134``,
``+1 415-555-0134``, ``415.555.0134``), and events write them in more than one way too. With
``new_callers``, a share of the conversations is with callers the CRM does not know yet (new
leads), each with one or two conversations.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aftercall.crm.base import DISPOSITIONS
from aftercall.models.event import SCHEMA_VERSION

FIRST = ("Ana", "Ben", "Chloe", "Dev", "Elif", "Femi", "Grace", "Hiro", "Ines", "Jon", "Kofi", "Lena")
LAST = ("Alvarez", "Brown", "Chen", "Dubois", "Eze", "Fischer", "Garcia", "Haddad", "Ito", "Jensen")
SUPPORT_TOPICS = ("billing", "cancellation", "technical issue", "appointment change", "delivery status", "refund")
SALES_TOPICS = ("premium plan", "renewal", "upgrade offer", "product demo")
AGENTS = ("agent-support-eu", "agent-support-us", "agent-sales-outbound")


@dataclass(frozen=True)
class SampleCustomer:
    """A customer of the synthetic directory the fake CRM is seeded with (not the layer's crm.base.Customer)."""

    name: str
    phone: str
    email: str

    @property
    def typed_phone(self) -> str:
        """The number as someone typed it into the CRM (one of four formats, fixed per customer)."""
        return typed(self.phone, int(self.phone[-4:]))


def typed(e164: str, variant: int) -> str:
    """A North American E.164 number written one of the ways people write it."""
    area, exchange, line = e164[2:5], e164[5:8], e164[8:]
    return (e164, f"({area}) {exchange}-{line}", f"+1 {area}-{exchange}-{line}", f"{area}.{exchange}.{line}")[
        variant % 4
    ]


def _directory(size: int = 200, seed: int = 7) -> tuple[SampleCustomer, ...]:
    rng = random.Random(seed)
    customers = []
    for index in range(size):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        customers.append(
            SampleCustomer(
                name=f"{first} {last}",
                phone=f"+1415555{index:04d}",
                email=f"{first.lower()}.{last.lower()}{index}@example.com",
            )
        )
    return tuple(customers)


#: The customers every generated conversation is with (the local fake CRM knows all of them).
CUSTOMERS: tuple[SampleCustomer, ...] = _directory()
AGENT_NUMBER = "+18005550100"


#: New callers' numbers: an area code none of :data:`CUSTOMERS` uses.
NEW_CALLER_PREFIX = "+1628555"


def new_caller(index: int) -> SampleCustomer:
    """A caller the CRM does not know (``index`` < 10,000 gives a distinct number)."""
    first, last = FIRST[index % len(FIRST)], LAST[index % len(LAST)]
    return SampleCustomer(f"{first} {last}", f"{NEW_CALLER_PREFIX}{index % 10_000:04d}", f"new.{index}@example.net")


def conversation(
    rng: random.Random,
    index: int,
    *,
    environment: str = "sandbox",
    now: datetime | None = None,
    customer: SampleCustomer | None = None,
) -> dict[str, Any]:
    """One plausible conversation: two thirds inbound support calls, one third outbound sales calls.

    The customer's number is written with spaces or dashes in one event out of four (the contract
    accepts them; the runtime reads them as E.164).
    """
    customer = customer or rng.choice(CUSTOMERS)
    ended = (now or datetime.now(UTC)) - timedelta(seconds=rng.randint(1, 600))
    duration = rng.randint(20, 900)
    started = ended - timedelta(seconds=duration)
    conversation_id = f"conv-{started:%Y%m%d}-{index:06d}-{rng.randrange(16**6):06x}"
    if rng.random() < 2 / 3:
        topic = rng.choice(SUPPORT_TOPICS)
        resolved = rng.random() < 0.6
        state: dict[str, Any] = {
            "last_topic": topic,
            "sentiment": rng.choice(("Positive", "Neutral", "Negative")),
            "resolution": "resolved" if resolved else "unresolved",
            "support_needed": not resolved,
            "follow_up_required": not resolved and rng.random() < 0.5,
            "user_id": f"cust-{CUSTOMERS.index(customer):04d}" if customer in CUSTOMERS else "new-caller",
            "turns": rng.randint(4, 40),
        }
        if not resolved:
            state["ticket_subject"] = f"Caller needs help with {topic}"
            state["issue_description"] = f"The caller asked about {topic}; the agent could not resolve it on the call."
            state["ticket_priority"] = rng.choice(("LOW", "MEDIUM", "HIGH"))
        number = customer.phone if index % 4 else typed(customer.phone, 2)
        direction, caller, callee, agent = "inbound", number, AGENT_NUMBER, rng.choice(AGENTS[:2])
        email = None
        reason = rng.choice(("completed", "customer_hangup", "agent_hangup"))
    else:
        disposition = rng.choice(sorted(DISPOSITIONS))
        state = {
            "last_topic": rng.choice(SALES_TOPICS),
            "sentiment": rng.choice(("Positive", "Neutral", "Negative")),
            "disposition": disposition,
            "campaign": "autumn-renewals",
        }
        number = customer.phone if index % 4 else typed(customer.phone, 2)
        direction, caller, callee, agent = "outbound", AGENT_NUMBER, number, AGENTS[2]
        email = customer.email
        reason = {"no_answer": "no_answer", "voicemail": "voicemail", "busy": "busy"}.get(disposition, "completed")
    return {
        "schema_version": SCHEMA_VERSION,
        "conversation_id": conversation_id,
        "environment": environment,
        "channel": "voice",
        "direction": direction,
        "started_at": started.isoformat(),
        "ended_at": ended.isoformat(),
        "duration_seconds": float(duration),
        "caller": caller,
        "callee": callee,
        "customer_email": email,
        "agent_id": agent,
        "ended_reason": reason,
        "state": state,
    }


def invalid_conversation(rng: random.Random, index: int, *, environment: str = "sandbox") -> dict[str, Any]:
    """A conversation with one realistic defect the contract must refuse."""
    detail = conversation(rng, index, environment=environment)
    defect = rng.choice(("phone", "missing_id", "times", "reason"))
    if defect == "phone":
        detail["caller"] = "555-CALL-ME"
    elif defect == "missing_id":
        del detail["conversation_id"]
    elif defect == "times":
        detail["ended_at"], detail["started_at"] = detail["started_at"], detail["ended_at"]
    else:
        detail["ended_reason"] = "caller_sneezed"
    return detail


def conversations(
    count: int,
    *,
    seed: int | None = None,
    duplicates: float = 0.0,
    invalid: float = 0.0,
    environment: str = "sandbox",
    new_callers: float = 0.0,
) -> list[dict[str, Any]]:
    """``count`` details; a ``duplicates`` share are re-emissions of earlier ones, ``invalid`` are
    defective, ``new_callers`` are with callers the CRM does not know (a third of them call twice)."""
    if count < 0:
        raise ValueError("count must not be negative")
    for name, ratio in (("duplicates", duplicates), ("invalid", invalid), ("new_callers", new_callers)):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"{name} must be a ratio between 0 and 1, got {ratio}")
    rng = random.Random(seed)
    details: list[dict[str, Any]] = []
    for index in range(count):
        roll = rng.random()
        if roll < duplicates:
            if details:
                details.append(dict(rng.choice(details)))
            else:  # nothing to duplicate yet: the first one is an ordinary conversation
                details.append(conversation(rng, index, environment=environment))
        elif roll < duplicates + invalid:
            details.append(invalid_conversation(rng, index, environment=environment))
        elif new_callers and rng.random() < new_callers:
            known = index // 3  # one new caller for every three such conversations' indexes: some call twice
            details.append(conversation(rng, index, environment=environment, customer=new_caller(known)))
        else:
            details.append(conversation(rng, index, environment=environment))
    return details
