"""HubSpot CRM adapter (private app token, CRM v3 objects API).

HubSpot has no idempotency key and no duplicate check for notes or tickets. Two things keep a
retry from writing twice: the action ledger stores the created object's id (so a completed
action is never run again), and every note and ticket carries a marker with the conversation id
that the adapter searches for before creating again after an attempt that may have half-done it.

A create that got no clear answer follows the unanswered-write protocol (:mod:`aftercall.crm.http`).
HubSpot's part in it: its search shows a new object a few moments late ("index lag",
:data:`SEARCH_LAG_SECONDS`), so the write has settled the index lag after a 5xx answer, and
``read timeout + settle_seconds + index lag`` after a create that got no answer was sent.

Callers are found by what HubSpot itself normalises: the calculated, digits-only properties
``hs_searchable_calculated_phone_number`` and ``hs_searchable_calculated_mobile_number`` (the
national number without country code), whatever format the phone was typed in, or by email. A
caller HubSpot does not know gets a contact (lifecycle stage ``lead``, lead status ``NEW``) under
``UnknownCallerPolicy=create``: see :mod:`aftercall.crm.callers`. HubSpot refuses a second contact
with an existing email with ``409 Contact already exists. Existing ID: N``; that id is used.
"""

from __future__ import annotations

import html
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from aftercall.credentials import SecretCredentials
from aftercall.crm.base import CrmCall, CrmRecord, Customer, Disposition, SummaryNote, SupportTicket
from aftercall.crm.callers import CallerMatch, Callers, NewCallers
from aftercall.crm.http import MIN_REQUEST_SECONDS, CrmHttpClient
from aftercall.crm.limiter import Pacer, RecentRequests
from aftercall.crm.search_slots import SharedSlots
from aftercall.errors import CrmAmbiguousError, CrmRequestError, CrmUnavailableError
from aftercall.phones import digits, parse_phone, region_of
from aftercall.privacy import mask_phone

DEFAULT_BASE_URL = "https://api.hubapi.com"
NOTE_TO_CONTACT = 202
TICKET_TO_CONTACT = 16
_CREATE_ATTEMPTS = 3
#: How long HubSpot's search may take to show a record after it was written. HubSpot documents no
#: figure ("it may take a few moments for newly created or updated objects to appear in search
#: results"); the settle window is at least this long.
SEARCH_LAG_SECONDS = 2.0
#: "Contact already exists. Existing ID: 12345" (HubSpot's 409 on a duplicate email).
_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)")
_CONTACT_PROPERTIES = ["email", "phone", "mobilephone", "createdate"]

log = logging.getLogger(__name__)


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
        search_lag_seconds: float = SEARCH_LAG_SECONDS,
        new_callers: NewCallers | None = None,
        **http: Any,
    ) -> None:
        """``settle_seconds``: how long after the read timeout an unanswered create may still be
        applied (default: the read timeout); ``search_lag_seconds``: how long HubSpot's search takes
        to show a new object. ``new_callers``: what to do with callers HubSpot does not know
        (default: park them)."""
        self._credentials = credentials
        self.http = HubSpotHttp(self.name, base_url, self._auth, **http)
        self.settle_seconds = self.http.read_timeout if settle_seconds is None else settle_seconds
        self.search_lag_seconds = search_lag_seconds
        self._sleep: Callable[[float], None] = http.get("sleep", time.sleep)
        self._callers = Callers(self, new_callers or NewCallers())

    def _auth(self, force: bool) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self._credentials.get(force)['access_token']}"}

    # --- actions -------------------------------------------------------------------------------

    def log_summary(self, note: SummaryNote, call: CrmCall) -> CrmRecord:
        contact_id = self.caller(note.customer, note.conversation_id, call).record_id
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
        contact_id = self.caller(ticket.customer, ticket.conversation_id, call).record_id
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
        contact_id = self.caller(disposition.customer, disposition.conversation_id, call).record_id
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

    def caller(self, customer: Customer, conversation_id: str, call: CrmCall) -> CallerMatch:
        """The caller's contact: cached per warm process, searched once when the conversation's
        actions ask at the same time, created once for a new caller (see aftercall.crm.callers)."""
        return self._callers.resolve(customer, conversation_id, call)

    def search_caller(self, customer: Customer, call: CrmCall) -> str | None:
        """The oldest contact with the caller's number (in any format) or email."""
        groups = []
        if customer.phone:
            phone = parse_phone(customer.phone)
            national = phone.national if phone is not None else digits(customer.phone)
            groups += [
                {"filters": [{"propertyName": prop, "operator": "EQ", "value": national}]}
                for prop in ("hs_searchable_calculated_phone_number", "hs_searchable_calculated_mobile_number")
            ]
        if customer.email:
            groups.append({"filters": [{"propertyName": "email", "operator": "EQ", "value": customer.email}]})
        body = self.http.request(
            "POST",
            "/crm/v3/objects/contacts/search",
            call,
            json={
                "filterGroups": groups,
                "properties": _CONTACT_PROPERTIES,
                "sorts": [{"propertyName": "createdate", "direction": "ASCENDING"}],
                "limit": 10,
            },
            safe_to_retry=True,
            search=True,
        )
        results = (body or {}).get("results") or []
        if not results:
            return None
        chosen = min(results, key=lambda result: _preference(result, customer))
        if len(results) > 1:
            log.warning(
                "several HubSpot contacts match the caller; using the oldest with the same country code",
                extra={
                    "matches": int((body or {}).get("total", len(results))),
                    "contact_id": str(chosen["id"]),
                    "customer_phone": mask_phone(customer.phone),
                },
            )
        return str(chosen["id"])

    def create_caller(self, customer: Customer, call: CrmCall) -> str:
        """A new lead's contact; HubSpot's 409 on an existing email gives that contact instead."""
        properties = {
            "phone": customer.phone,
            "email": customer.email,
            "firstname": customer.first_name,
            "lastname": customer.last_name,
            "lifecyclestage": "lead",
            "hs_lead_status": "NEW",
        }
        payload = {"properties": {key: value for key, value in properties.items() if value}}
        try:
            body = self.http.request("POST", "/crm/v3/objects/contacts", call, json=payload, safe_to_retry=False)
        except CrmRequestError as exc:
            existing = _existing_id(exc)
            if existing is not None:
                return existing
            if exc.status == 400 and customer.email and customer.phone and "email" in str(exc).lower():
                # HubSpot refuses addresses it considers invalid; the number alone still makes the lead.
                log.warning("HubSpot refused the caller's email; creating the contact with the phone only")
                return self.create_caller(Customer(customer.phone, None, customer.first_name, customer.last_name), call)
            raise
        return str(body["id"])

    def settle(self, unanswered_at: float | None, call: CrmCall, answered_at: float | None = None) -> None:
        self._settle("contacts", unanswered_at, call, answered_at)

    def _create_once(self, kind: str, prop: str, token: str, payload: dict[str, Any], call: CrmCall) -> str:
        """Create a note/ticket unless one carrying ``token`` exists; safe after a half-done attempt."""
        if call.unanswered_write_at is not None:
            # Only an earlier create that may have been applied is looked for: an attempt that
            # failed before creating (rate limit, unknown caller) costs no search.
            self._settle(kind, call.unanswered_write_at, call)
            if found := self._find_marked(kind, prop, token, call):
                return found
        for _ in range(_CREATE_ATTEMPTS):
            try:
                body = self.http.request("POST", f"/crm/v3/objects/{kind}", call, json=payload, safe_to_retry=False)
                return str(body["id"])
            except CrmAmbiguousError as exc:
                self._settle(kind, exc.unanswered_at, call, exc.answered_at)
                if found := self._find_marked(kind, prop, token, call):
                    return found
        raise CrmUnavailableError(f"hubspot: creating a {kind[:-1]} kept failing after {_CREATE_ATTEMPTS} attempts")

    def _settle(self, kind: str, unanswered_at: float | None, call: CrmCall, answered_at: float | None = None) -> None:
        """Wait until an unclear create has settled (see the module docstring), or raise for a later
        attempt when the wait and a search do not fit in this invocation: a search before it lands
        finds nothing, and the create that follows makes a second object."""
        if unanswered_at is None:
            return
        if answered_at is not None:
            settled = answered_at + self.search_lag_seconds
        else:
            settled = unanswered_at + self.http.read_timeout + self.settle_seconds + self.search_lag_seconds
        wait = settled - time.time()
        if wait <= 0:
            return
        if wait + self.http.read_timeout >= call.deadline.remaining():
            raise CrmUnavailableError(
                f"hubspot: a {kind[:-1]} create got no clear answer and HubSpot may still apply it (or not show "
                f"it yet); waiting {wait:.1f}s for it before looking would outlast this invocation, leaving it "
                "for a retry"
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
            search=True,
        )
        results = (body or {}).get("results") or []
        return str(results[0]["id"]) if results else None


class HubSpotHttp(CrmHttpClient):
    """HubSpot's limits as they are: ``X-HubSpot-RateLimit-*`` headers, and 429s without ``Retry-After``.

    HubSpot's answers carry the general budget (``X-HubSpot-RateLimit-Max``, ``-Remaining``,
    ``-Interval-Milliseconds``: 100 per 10 000 ms on Starter, shared by the portal's integrations);
    near its end (at its end, when every environment shares slots) this environment slows down
    instead of running into 429s. A 429 says which limit
    was hit in its body (``"policyName": "SECONDLY"`` for the search limit, ``"TEN_SECONDLY_ROLLING"``
    for the general one) and often has no ``Retry-After``.
    """

    #: Slow down when fewer than this share of the general budget is left in the window.
    LOW_BUDGET_SHARE = 0.1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recent = RecentRequests()

    def _policy_wait(self, response: requests.Response) -> float | None:
        policy = _policy_name(response)
        if policy == "SECONDLY":
            return 1.0
        if policy == "TEN_SECONDLY_ROLLING":
            return max(0.5, self.recent.until_one_frees(_interval(response)))
        return None

    def _observe(self, response: requests.Response, limiters: tuple[Pacer, ...], call: CrmCall) -> None:
        self.recent.sent()
        remaining, most = (
            _header_int(response, "X-HubSpot-RateLimit-Remaining"),
            _header_int(response, "X-HubSpot-RateLimit-Max"),
        )
        # Slots shared by every environment already pace the whole function to its share (and keep
        # headroom): there only an empty budget, another integration's doing, is a reason to wait.
        low = 0.0 if isinstance(self.limiter, SharedSlots) else most * self.LOW_BUDGET_SHARE if most else 0.0
        if remaining is None or not most or remaining > low:
            return
        # Requests paced to the budget leave the window one slot (interval / max) apart: pause for one
        # slot, two when none is left. (What this environment sent says little about when the
        # portal's oldest request leaves the window: the others share it.)
        interval = _interval(response) or 10.0
        delay = (2 if remaining == 0 else 1) * interval / most
        if limiters:
            for limiter in limiters:
                limiter.pause(delay)
        elif delay + MIN_REQUEST_SECONDS < call.deadline.remaining():
            self._sleep(delay)


def _header_int(response: requests.Response, name: str) -> int | None:
    try:
        return int(response.headers.get(name, ""))
    except ValueError:
        return None


def _interval(response: requests.Response) -> float | None:
    millis = _header_int(response, "X-HubSpot-RateLimit-Interval-Milliseconds")
    return millis / 1000 if millis else None


def _policy_name(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return str(body.get("policyName") or "") or None if isinstance(body, dict) else None


def _association(contact_id: str, type_id: int) -> dict[str, Any]:
    return {
        "to": {"id": contact_id},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}],
    }


def _note_body(summary: Mapping[str, Any], token: str) -> str:
    """A readable HTML note: one line per summary field, then the marker."""
    lines = [f"<b>{html.escape(str(key))}</b>: {html.escape(str(value))}" for key, value in summary.items()]
    return "<p>" + "<br>".join(["<b>Call summary</b>", *lines]) + f"</p><p>Ref: {token}</p>"


def _existing_id(exc: CrmRequestError) -> str | None:
    """The contact id in HubSpot's 409 ``Contact already exists. Existing ID: N``."""
    if exc.status != 409 or not isinstance(exc.body, dict):
        return None
    found = _EXISTING_ID.search(str(exc.body.get("message", "")))
    return found.group(1) if found else None


def _preference(result: Mapping[str, Any], customer: Customer) -> tuple[int, str, int]:
    """Deterministic choice among matches: same country code first, then the oldest, then the lowest id."""
    props = result.get("properties") or {}
    ours = parse_phone(customer.phone) if customer.phone else None
    same_country = 1
    region = region_of(ours) if ours is not None else None
    for typed in (props.get("phone"), props.get("mobilephone")):
        theirs = parse_phone(typed, region) if typed else None
        if ours is not None and theirs is not None and theirs.e164 == ours.e164:
            same_country = 0
    created = str(props.get("createdate") or result.get("createdAt") or "")
    return same_country, created, int(result["id"])
