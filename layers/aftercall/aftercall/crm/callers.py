"""Who called: find the caller's CRM record, or create it once for a new caller.

For an inbound agent, new callers are the new leads. ``UnknownCallerPolicy`` says what happens
to a caller the CRM does not know: ``create`` (the default) makes their contact, ``park`` fails
the action with :class:`UnknownContactError` (the event ends in the failed-events queue).

At most one contact per new caller, even when two of their conversations are processed at the
same moment and when a create's answer is lost:

1. the caller lease (:mod:`aftercall.crm.caller_lease`): one conversation creates, the others
   wait for its record and use the same contact; the CRM's search lag does not matter, since
   they read the record, not the search;
2. a create that got no clear answer (timeout, 5xx) is looked for after it settles (the
   adapter's settle window covers the CRM's search lag) before it is sent again, by this attempt
   or, through the lease, by the next holder;
3. the CRM's own duplicate check where it has one (HubSpot: 409 on an existing email; Salesforce
   and Zendesk: upsert on an external id or email).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from aftercall.crm.base import CrmCall, Customer
from aftercall.crm.caller_lease import CallerLeases
from aftercall.crm.lookups import SharedLookups
from aftercall.errors import CrmAmbiguousError, UnknownContactError
from aftercall.privacy import mask_email, mask_phone

UnknownCallerPolicy = Literal["create", "park"]
UNKNOWN_CALLER_POLICIES: tuple[str, ...] = get_args(UnknownCallerPolicy)
_CREATE_ATTEMPTS = 2


@dataclass(frozen=True)
class CallerMatch:
    """The caller's record id, and which conversation's processing created it (``None``: found)."""

    record_id: str
    created_by: str | None = None

    def is_new_lead(self, conversation_id: str) -> bool:
        return self.created_by == conversation_id


@dataclass(frozen=True)
class NewCallers:
    """What to do with a caller the CRM does not know (``leases`` is required for ``create``; with
    ``park`` it still shares found record ids between environments)."""

    policy: UnknownCallerPolicy = "park"
    leases: CallerLeases | None = None

    def __post_init__(self) -> None:
        if self.policy not in UNKNOWN_CALLER_POLICIES:
            raise ValueError(f"UnknownCallerPolicy must be one of {', '.join(UNKNOWN_CALLER_POLICIES)}")
        if self.policy == "create" and self.leases is None:
            raise ValueError("creating new callers needs the caller lease table")


class CallerDirectory(Protocol):
    """What an adapter provides to find and create a caller's record."""

    name: str

    def search_caller(self, customer: Customer, call: CrmCall) -> str | None:
        """The record id for the customer's phone or email, ``None`` when there is none."""
        ...

    def create_caller(self, customer: Customer, call: CrmCall) -> str:
        """Create the record; :class:`CrmAmbiguousError` when the CRM may or may not have made it."""
        ...

    def settle(self, unanswered_at: float | None, call: CrmCall, answered_at: float | None = None) -> None:
        """Wait until a create sent at ``unanswered_at`` (answered with a 5xx at ``answered_at``, if it
        was) shows in search, or raise when that does not fit in this invocation."""
        ...


def caller_key(customer: Customer) -> str | None:
    """What a caller is known by for the lease: their E.164 number, else their email."""
    return customer.phone or (customer.email.lower() if customer.email else None)


def caller_external_id(customer: Customer) -> str | None:
    """A stable external id for a new caller's record (Salesforce upsert, Zendesk create-or-update):
    a hash of their normalised number or email, the same on every retry and in every environment,
    and no raw number in URLs or error messages."""
    key = caller_key(customer)
    return None if key is None else "aftercall-caller-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def unknown(crm: str, customer: Customer) -> UnknownContactError:
    if not customer.phone and not customer.email:
        return UnknownContactError(f"the conversation has no customer phone number or email to find a {crm} record by")
    return UnknownContactError(
        f"no {crm} record with phone {mask_phone(customer.phone)} or email {mask_email(customer.email)}"
        " (UnknownCallerPolicy is park)"
    )


class Callers:
    """Resolves callers for one adapter; the warm process caches what it resolved."""

    def __init__(self, directory: CallerDirectory, new_callers: NewCallers) -> None:
        self.directory = directory
        self.new_callers = new_callers
        self._cache: SharedLookups[Customer, CallerMatch] = SharedLookups()

    def resolve(self, customer: Customer, conversation_id: str, call: CrmCall) -> CallerMatch:
        """The caller's record: cached, found, or (policy ``create``) created once."""
        return self._cache.get(
            customer, lambda: self._resolve(customer, conversation_id, call), call.deadline.remaining()
        )

    def _resolve(self, customer: Customer, conversation_id: str, call: CrmCall) -> CallerMatch:
        directory, leases = self.directory, self.new_callers.leases
        key = caller_key(customer)
        if key is None:
            raise unknown(directory.name, customer)
        if leases is not None and (known := leases.known(directory.name, key)) is not None:
            assert known.contact_id is not None
            return CallerMatch(known.contact_id, known.created_by)
        found = directory.search_caller(customer, call)
        if found is not None:
            if leases is not None:
                leases.remember(directory.name, key, found)
            return CallerMatch(found)
        if self.new_callers.policy == "park" or leases is None:
            raise unknown(directory.name, customer)
        lease = leases.acquire(directory.name, key, conversation_id, call.deadline)
        if lease.contact_id is not None:
            return CallerMatch(lease.contact_id, lease.created_by)
        unsettled = [lease.unsettled_at] if lease.unsettled_at is not None else []
        try:
            record_id = self._create(customer, unsettled, call)
        except BaseException:
            # The next holder looks (once it settled) for a create of ours that may have been applied.
            leases.release(directory.name, key, conversation_id, max(unsettled, default=None))
            raise
        leases.record(directory.name, key, record_id, conversation_id)
        return CallerMatch(record_id, conversation_id)

    def _create(self, customer: Customer, unsettled: list[float], call: CrmCall) -> str:
        """Create, unless an earlier unclear create turns up once it has settled.

        ``unsettled`` collects when unclear creates were sent (an earlier holder's, then ours).
        """
        directory = self.directory
        answered: float | None = None
        for attempt in range(_CREATE_ATTEMPTS):
            if unsettled:
                directory.settle(max(unsettled), call, answered)
                if (found := directory.search_caller(customer, call)) is not None:
                    return found
            try:
                return directory.create_caller(customer, call)
            except CrmAmbiguousError as exc:
                unsettled.append(exc.unanswered_at if exc.unanswered_at is not None else time.time())
                answered = exc.answered_at
                if attempt + 1 == _CREATE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")
