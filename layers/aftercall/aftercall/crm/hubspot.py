"""HubSpot CRM adapter (private app token, CRM v3 objects API).

HubSpot has no idempotency key and no duplicate check for notes or tickets. Two things keep a
retry from writing twice: the action ledger stores the created object's id (so a completed
action is never run again), and every note and ticket carries a marker with the conversation id
that the adapter searches for before creating again after an attempt that may have half-done it.

A create that got no answer (timeout, dropped connection) may still be applied after we stopped
waiting, and a search right away would miss it. So before that search the adapter lets it settle:
it waits until ``read timeout + settle_seconds`` after the create was sent (20 s by default),
within the invocation's time, or else leaves the action for a later attempt, which waits the
same way (the action ledger tells it when the unanswered create was sent). A create HubSpot
applies later than that can still end up twice: see docs/reliability.md.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Mapping
from typing import Any

from aftercall.credentials import SecretCredentials
from aftercall.crm.base import CrmCall, CrmRecord, Customer, Disposition, SummaryNote, SupportTicket
from aftercall.crm.http import CrmHttpClient
from aftercall.crm.lookups import SharedLookups
from aftercall.errors import CrmAmbiguousError, CrmUnavailableError, UnknownContactError
from aftercall.privacy import mask_email, mask_phone

DEFAULT_BASE_URL = "https://api.hubapi.com"
NOTE_TO_CONTACT = 202
TICKET_TO_CONTACT = 16
_CREATE_ATTEMPTS = 3


def marker(conversation_id: str) -> str:
    """The token a note or ticket carries so it can be found again by conversation."""
    return f"aftercall-{conversation_id}"


class HubSpotCrm:
    name = "hubspot"

    def __init__(
        self,
        credentials: SecretCredentials,
        base_url: str = DEFAULT_BASE_URL,
        *,
        settle_seconds: float | None = None,
        **http: Any,
    ) -> None:
        """``settle_seconds``: how long after the read timeout an unanswered create may still be
        applied and must be waited for before searching for it (default: the read timeout)."""
        self._credentials = credentials
        self.http = CrmHttpClient(self.name, base_url, self._auth, **http)
        self.settle_seconds = self.http.read_timeout if settle_seconds is None else settle_seconds
        self._sleep: Callable[[float], None] = http.get("sleep", time.sleep)
        self._contacts: SharedLookups[Customer] = SharedLookups()

    def _auth(self, force: bool) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self._credentials.get(force)['access_token']}"}

    # --- actions -------------------------------------------------------------------------------

    def log_summary(self, note: SummaryNote, call: CrmCall) -> CrmRecord:
        contact_id = self.find_contact(note.customer, call)
        token = marker(note.conversation_id)
        payload = {
            "properties": {
                "hs_timestamp": note.occurred_at.isoformat(),
                "hs_note_body": _note_body(note.summary, token),
            },
            "associations": [_association(contact_id, NOTE_TO_CONTACT)],
        }
        object_id = self._create_once("notes", "hs_note_body", token, payload, call)
        return CrmRecord("note", object_id, {"contact_id": contact_id})

    def open_ticket(self, ticket: SupportTicket, call: CrmCall) -> CrmRecord:
        contact_id = self.find_contact(ticket.customer, call)
        token = marker(ticket.conversation_id)
        payload = {
            "properties": {
                "subject": ticket.subject,
                "content": f"{ticket.description}\n\nRef: {token}",
                "hs_pipeline": "0",
                "hs_pipeline_stage": "1",
                "hs_ticket_priority": ticket.priority,
            },
            "associations": [_association(contact_id, TICKET_TO_CONTACT)],
        }
        object_id = self._create_once("tickets", "content", token, payload, call)
        return CrmRecord("ticket", object_id, {"contact_id": contact_id})

    def log_disposition(self, disposition: Disposition, call: CrmCall) -> CrmRecord:
        contact_id = self.find_contact(disposition.customer, call)
        # Setting a property to a value is naturally idempotent: safe to retry as is.
        self.http.request(
            "PATCH",
            f"/crm/v3/objects/contacts/{contact_id}",
            call,
            json={"properties": {"hs_lead_status": disposition.lead_status}},
            safe_to_retry=True,
        )
        return CrmRecord("contact", contact_id, {"hs_lead_status": disposition.lead_status})

    # --- helpers ---------------------------------------------------------------------------------

    def find_contact(self, customer: Customer, call: CrmCall) -> str:
        """The contact id for the customer's phone or email; cached per warm process, and searched
        once when the conversation's actions ask at the same time (see :mod:`aftercall.crm.lookups`)."""
        return self._contacts.get(customer, lambda: self._search_contact(customer, call), call.deadline.remaining())

    def _search_contact(self, customer: Customer, call: CrmCall) -> str:
        groups = [
            {"filters": [{"propertyName": prop, "operator": "EQ", "value": value}]}
            for prop, value in (("phone", customer.phone), ("mobilephone", customer.phone), ("email", customer.email))
            if value
        ]
        if not groups:
            raise UnknownContactError("the conversation has no customer phone number or email to find a contact by")
        body = self.http.request(
            "POST",
            "/crm/v3/objects/contacts/search",
            call,
            json={"filterGroups": groups, "properties": ["email", "phone"], "limit": 1},
            safe_to_retry=True,
        )
        results = (body or {}).get("results") or []
        if not results:
            raise UnknownContactError(
                f"no HubSpot contact with phone {mask_phone(customer.phone)} or email {mask_email(customer.email)}"
            )
        return str(results[0]["id"])

    def _create_once(self, kind: str, prop: str, token: str, payload: dict[str, Any], call: CrmCall) -> str:
        """Create a note/ticket unless one carrying ``token`` exists; safe after a half-done attempt."""
        if call.recovering:
            self._settle(kind, call.unanswered_write_at, call)
            if found := self._find_marked(kind, prop, token, call):
                return found
        for _ in range(_CREATE_ATTEMPTS):
            try:
                body = self.http.request("POST", f"/crm/v3/objects/{kind}", call, json=payload, safe_to_retry=False)
                return str(body["id"])
            except CrmAmbiguousError as exc:
                self._settle(kind, exc.unanswered_at, call)
                if found := self._find_marked(kind, prop, token, call):
                    return found
        raise CrmUnavailableError(f"hubspot: creating a {kind[:-1]} kept failing after {_CREATE_ATTEMPTS} attempts")

    def _settle(self, kind: str, unanswered_at: float | None, call: CrmCall) -> None:
        """Wait until a create sent at ``unanswered_at`` that got no answer can no longer be applied.

        HubSpot may still be working on it; a search before it lands finds nothing and the create
        that follows makes a second object. Gives up for a later attempt (which waits the same way)
        when the wait, plus time for a search, does not fit in this invocation.
        """
        if unanswered_at is None:
            return
        wait = unanswered_at + self.http.read_timeout + self.settle_seconds - time.time()
        if wait <= 0:
            return
        if wait + self.http.read_timeout >= call.deadline.remaining():
            raise CrmUnavailableError(
                f"hubspot: a {kind[:-1]} create got no answer and HubSpot may still apply it; waiting {wait:.1f}s "
                "for it before looking would outlast this invocation, leaving it for a retry"
            )
        self._sleep(wait)

    def _find_marked(self, kind: str, prop: str, token: str, call: CrmCall) -> str | None:
        body = self.http.request(
            "POST",
            f"/crm/v3/objects/{kind}/search",
            call,
            json={
                "filterGroups": [{"filters": [{"propertyName": prop, "operator": "CONTAINS_TOKEN", "value": token}]}],
                "limit": 1,
            },
            safe_to_retry=True,
        )
        results = (body or {}).get("results") or []
        return str(results[0]["id"]) if results else None


def _association(contact_id: str, type_id: int) -> dict[str, Any]:
    return {
        "to": {"id": contact_id},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}],
    }


def _note_body(summary: Mapping[str, Any], token: str) -> str:
    """A readable HTML note: one line per summary field, then the marker."""
    lines = [f"<b>{html.escape(str(key))}</b>: {html.escape(str(value))}" for key, value in summary.items()]
    return "<p>" + "<br>".join(["<b>Call summary</b>", *lines]) + f"</p><p>Ref: {token}</p>"
