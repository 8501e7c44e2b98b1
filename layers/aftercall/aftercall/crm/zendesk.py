"""Zendesk Support adapter (API token auth, Tickets and Users API).

Where each action lands, and why:

* **Support ticket**: a ticket whose requester is the customer, the description as its first
  comment, priority mapped (LOW/MEDIUM/HIGH/URGENT → low/normal/high/urgent).
* **Call summary**: an *internal note* (a private comment) that opens a ticket for the call,
  tagged ``aftercall_call_summary``. Zendesk teams work from tickets and a requester's ticket
  history, and Zendesk Talk logs every phone call as a ticket the same way, so that is where an
  agent looks. The note is private so the customer is never emailed the agent's notes. Appending
  to the requester's "latest" ticket was rejected: it would land on an unrelated conversation,
  and ticket updates take no ``Idempotency-Key``, so a retry could add the note twice. Teams that
  do not want call logs in their queues add a trigger on the tag (for example: solve it).
* **Disposition**: a custom user field (``aftercall_disposition`` by default) on the customer,
  set to the disposition (``interested``, ``no_answer``…). Setting a field is naturally
  idempotent and always shows the latest outcome; a tag would pile up stale outcomes.

Callers: found with Zendesk's search by phone (``phone:*<national number>``, which matches the
number in any format) or by email; a new caller (``UnknownCallerPolicy=create``) becomes an end
user through ``create_or_update``, matched on their email or on a stable ``external_id`` derived
from their number, so a retry or a second conversation updates that user instead of adding one.

Never twice: every ticket create carries ``Idempotency-Key: aftercall:<conversation>:<action>``.
Zendesk keeps a key for two hours and answers a repeat with the same body by replaying the first
response (``x-idempotency-lookup: hit``) instead of creating a second ticket, so a create that
timed out or failed after the write is simply sent again. Past those two hours (a replay from
the failed-events queue) the same value, stored as the ticket's ``external_id``, is looked up
before creating again. A repeat whose body changed (an End function that is not deterministic)
is refused by Zendesk with 400 ``IdempotentRequestError``: the ticket the first attempt made is
then found by ``external_id``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

from aftercall.credentials import SecretCredentials
from aftercall.crm.base import CrmCall, CrmRecord, Customer, Disposition, SummaryNote, SupportTicket
from aftercall.crm.callers import CallerMatch, Callers, NewCallers, caller_external_id
from aftercall.crm.http import CrmHttpClient
from aftercall.errors import ConfigurationError, CrmRequestError
from aftercall.phones import parse_phone, region_of
from aftercall.privacy import mask_phone

#: Keys the CRM secret must hold; optional ones are listed in docs/crm.md.
SECRET_KEYS = ("subdomain", "email", "api_token")
DEFAULT_DISPOSITION_FIELD = "aftercall_disposition"
TICKET_PRIORITY = {"LOW": "low", "MEDIUM": "normal", "HIGH": "high", "URGENT": "urgent"}
SUMMARY_TAG = "aftercall_call_summary"
TICKET_TAG = "aftercall_support"

_SUBDOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_FIELD_KEY = re.compile(r"^[a-z0-9_]{1,64}$")

log = logging.getLogger(__name__)


def idempotency_key(conversation_id: str, action: str) -> str:
    """The ``Idempotency-Key`` and ``external_id`` of a ticket (at most 255 characters)."""
    return f"aftercall:{conversation_id}:{action}"


class ZendeskCrm:
    name = "zendesk"

    def __init__(
        self,
        credentials: SecretCredentials,
        base_url: str | None = None,
        *,
        allow_loopback_http: bool = False,
        new_callers: NewCallers | None = None,
        **http: Any,
    ) -> None:
        """``base_url`` overrides ``https://<subdomain>.zendesk.com`` (the template's ``CrmBaseUrl``);
        ``new_callers``: what to do with callers Zendesk does not know (default: park them)."""
        self._credentials = credentials
        self._allow_loopback_http = allow_loopback_http
        self._http_options = http
        self._setup_lock = threading.Lock()
        self._client: CrmHttpClient | None = None
        if base_url is not None:  # refuse a bad override at once, before any secret is read
            self._client = CrmHttpClient(
                self.name, base_url, self._auth, allow_loopback_http=allow_loopback_http, **http
            )
        self._callers = Callers(self, new_callers or NewCallers())

    # --- actions -------------------------------------------------------------------------------

    def log_summary(self, note: SummaryNote, call: CrmCall) -> CrmRecord:
        user_id = self.caller(note.customer, note.conversation_id, call).record_id
        topic = note.summary.get("topic") or note.summary.get("last_topic")
        ticket = {
            "subject": (f"Call summary: {topic}" if topic else "Call summary")[:255],
            "comment": {"body": _summary_text(note), "public": False},
            "requester_id": int(user_id),
            "tags": ["aftercall", SUMMARY_TAG],
        }
        ticket_id = self._create_ticket(note.conversation_id, "crm_summary", ticket, call)
        return CrmRecord("ticket", ticket_id, {"requester_id": user_id, "note": "internal"})

    def open_ticket(self, ticket: SupportTicket, call: CrmCall) -> CrmRecord:
        user_id = self.caller(ticket.customer, ticket.conversation_id, call).record_id
        body = f"{ticket.description}\n\nRef: aftercall-{ticket.conversation_id}".strip()
        fields = {
            "subject": ticket.subject,
            "comment": {"body": body, "public": False},
            "requester_id": int(user_id),
            "priority": TICKET_PRIORITY[ticket.priority],
            "tags": ["aftercall", TICKET_TAG],
        }
        ticket_id = self._create_ticket(ticket.conversation_id, "support_ticket", fields, call)
        return CrmRecord("ticket", ticket_id, {"requester_id": user_id})

    def log_disposition(self, disposition: Disposition, call: CrmCall) -> CrmRecord:
        user_id = self.caller(disposition.customer, disposition.conversation_id, call).record_id
        field = self._disposition_field()
        # Setting a field to a value is naturally idempotent: safe to retry as is.
        body = self._http().request(
            "PUT",
            f"/api/v2/users/{user_id}",
            call,
            json={"user": {"user_fields": {field: disposition.disposition}}},
            safe_to_retry=True,
        )
        stored = ((body or {}).get("user") or {}).get("user_fields") or {}
        if stored.get(field) != disposition.disposition:
            # Zendesk drops values for user fields that do not exist instead of refusing them.
            raise ConfigurationError(
                f"zendesk did not store user field {field!r}: create a text or drop-down user field with that "
                "key (docs/crm.md), or set 'disposition_user_field' in the CRM secret"
            )
        return CrmRecord("user", user_id, {"user_field": field, "value": disposition.disposition})

    # --- helpers ---------------------------------------------------------------------------------

    def caller(self, customer: Customer, conversation_id: str, call: CrmCall) -> CallerMatch:
        """The caller's end user: found by phone or email, or (``UnknownCallerPolicy=create``) made
        once with create-or-update (see :mod:`aftercall.crm.callers`); cached per warm process."""
        return self._callers.resolve(customer, conversation_id, call)

    def search_caller(self, customer: Customer, call: CrmCall) -> str | None:
        """The end user with the caller's number (as Zendesk's search matches it), else their email."""
        if customer.phone:
            phone = parse_phone(customer.phone)
            national = phone.national if phone is not None else _digits(customer.phone)
            # "To specify a phone number in different formats, add a leading * (asterisk) to the number."
            body = self._http().request(
                "GET",
                "/api/v2/search.json",
                call,
                params={"query": f"type:user role:end-user phone:*{national}"},
                safe_to_retry=True,
                search=True,
            )
            users = [u for u in (body or {}).get("results") or [] if u.get("result_type", "user") == "user"]
            if found := _choose(users, customer):
                return found
        if customer.email:
            # The users search matches partial values of any user property; keep only an exact match.
            body = self._http().request(
                "GET", "/api/v2/users/search", call, params={"query": customer.email}, safe_to_retry=True, search=True
            )
            users = [u for u in (body or {}).get("users") or [] if _same_email(u, customer)]
            if users:
                return str(min(users, key=lambda u: (str(u.get("created_at") or ""), int(u["id"])))["id"])
        return None

    def create_caller(self, customer: Customer, call: CrmCall) -> str:
        """The new caller's end user via create-or-update: it matches an existing user on email or
        ``external_id``, so sending it again (lost answer, second conversation) makes no second user."""
        name = " ".join(part for part in (customer.first_name, customer.last_name) if part)
        user: dict[str, Any] = {
            "name": name or f"Caller {customer.phone or customer.email}",
            "role": "end-user",
            "phone": customer.phone,
            "email": customer.email,
        }
        if not customer.email:
            # With an email, the email is the match key; an external id could overwrite another
            # integration's on that user. Without one, a stable id from the number is.
            user["external_id"] = caller_external_id(customer)
        payload = {"user": {key: value for key, value in user.items() if value}}
        try:
            body = self._http().request(
                "POST", "/api/v2/users/create_or_update", call, json=payload, safe_to_retry=True
            )
        except CrmRequestError as exc:
            if exc.status == 422 and customer.email and customer.phone and "email" in str(exc).lower():
                log.warning("zendesk refused the caller's email; creating the end user with the phone only")
                return self.create_caller(Customer(customer.phone, None, customer.first_name, customer.last_name), call)
            raise
        return str(body["user"]["id"])

    def settle(self, unanswered_at: float | None, call: CrmCall, answered_at: float | None = None) -> None:
        """Nothing to wait for: create-or-update sent again matches the user the first one made."""

    def _create_ticket(self, conversation_id: str, action: str, ticket: dict[str, Any], call: CrmCall) -> str:
        """Create a ticket once per (conversation, action); see the module docstring for how."""
        key = idempotency_key(conversation_id, action)
        if call.recovering and (found := self._find_ticket(key, call)):
            return found
        try:
            body = self._http().request(
                "POST",
                "/api/v2/tickets",
                call,
                json={"ticket": {**ticket, "external_id": key}},
                extra_headers={"Idempotency-Key": key},
                safe_to_retry=True,  # the key makes a repeat replay the first answer
            )
        except CrmRequestError as exc:
            if exc.status == 400 and "IdempotentRequestError" in str(exc) and (found := self._find_ticket(key, call)):
                return found
            raise
        return str(body["ticket"]["id"])

    def _find_ticket(self, external_id: str, call: CrmCall) -> str | None:
        body = self._http().request(
            "GET", "/api/v2/tickets", call, params={"external_id": external_id}, safe_to_retry=True
        )
        tickets = sorted((body or {}).get("tickets") or [], key=lambda t: int(t["id"]))
        return str(tickets[0]["id"]) if tickets else None

    def _disposition_field(self) -> str:
        field = self._credentials.get().get("disposition_user_field") or DEFAULT_DISPOSITION_FIELD
        if not _FIELD_KEY.match(field):
            raise ConfigurationError(f"zendesk: disposition_user_field {field!r} is not a user field key (a-z, 0-9, _)")
        return field

    # --- setup and auth --------------------------------------------------------------------------

    def _http(self) -> CrmHttpClient:
        """The API client; without a base URL override it is built from the secret's subdomain."""
        with self._setup_lock:
            if self._client is None:
                subdomain = self._credentials.get()["subdomain"].strip().lower()
                if not _SUBDOMAIN.match(subdomain):
                    raise ConfigurationError(
                        f"zendesk: subdomain {subdomain!r} in the CRM secret is not a Zendesk subdomain "
                        "(the 'acme' of acme.zendesk.com)"
                    )
                self._client = CrmHttpClient(
                    self.name,
                    f"https://{subdomain}.zendesk.com",
                    self._auth,
                    allow_loopback_http=self._allow_loopback_http,
                    **self._http_options,
                )
            return self._client

    @property
    def http(self) -> CrmHttpClient:
        return self._http()

    def _auth(self, force: bool) -> Mapping[str, str]:
        """API token auth: HTTP Basic with ``<agent email>/token`` and the token."""
        secret = self._credentials.get(force)
        pair = f"{secret['email']}/token:{secret['api_token']}".encode()
        return {"Authorization": f"Basic {base64.b64encode(pair).decode('ascii')}"}


def _digits(number: str | None) -> str:
    return "".join(ch for ch in number or "" if ch.isdigit())


def _same_email(user: Mapping[str, Any], customer: Customer) -> bool:
    email = user.get("email")
    return bool(customer.email and isinstance(email, str) and email.casefold() == customer.email.casefold())


def _choose(users: list[dict[str, Any]], customer: Customer) -> str | None:
    """Among users whose number ends with the caller's national number: the one with the caller's
    very number first, then the oldest, then the lowest id (deterministic); logged masked."""
    ours = parse_phone(customer.phone) if customer.phone else None
    if ours is None:
        return None
    region = region_of(ours)

    def same(user: Mapping[str, Any]) -> int:
        theirs = parse_phone(str(user.get("phone") or ""), region)
        return 0 if theirs is not None and theirs.e164 == ours.e164 else 1

    matching = [u for u in users if _digits(u.get("phone")).endswith(ours.national)]
    if not matching:
        return None
    chosen = min(matching, key=lambda u: (same(u), str(u.get("created_at") or ""), int(u["id"])))
    if len(matching) > 1:
        log.warning(
            "several Zendesk users match the caller; using the oldest with the same number",
            extra={
                "matches": len(matching),
                "user_id": str(chosen["id"]),
                "customer_phone": mask_phone(customer.phone),
            },
        )
    return str(chosen["id"])


def _summary_text(note: SummaryNote) -> str:
    """One ``key: value`` line per summary field, then the reference."""
    lines = [f"{key}: {value if isinstance(value, str) else json.dumps(value)}" for key, value in note.summary.items()]
    return "\n".join(["Call summary", *lines, "", f"Ref: aftercall-{note.conversation_id}"])[:60_000]
