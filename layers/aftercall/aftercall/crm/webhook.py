"""A generic signed webhook: every action is POSTed as JSON to a URL you own.

For teams whose CRM has no adapter here, or who want the after-call work in their own service.
The request (the contract a receiver implements; docs/crm.md has a receiver example)::

    POST <url>
    Content-Type: application/json
    Idempotency-Key: <conversation_id>:<action>
    X-Aftercall-Timestamp: <unix seconds>
    X-Aftercall-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<raw body>" under the signing secret>

    {"schema_version": "1", "action": "log_summary" | "open_ticket" | "log_disposition",
     "conversation_id": "...", "unknown_caller_policy": "create" | "park",
     "customer": {"phone": "+14155550134" | null, "email": ... | null,
                  "first_name": ..., "last_name": ...}, ...}

The caller: ``phone`` is E.164 (numbers typed without a country code were read with
``DefaultPhoneRegion``; one that cannot be read is sent as its digits), the name fields only when
the agent collected them. ``unknown_caller_policy`` says what the receiver does with a caller it
does not know: ``create`` their record (once per caller: key it on the phone, else the email, as
every delivery of their conversations carries the same values) and answer
``{"id": ..., "caller": "created"}``; ``park``: answer 404 ``{"error": "unknown_contact"}``.
A known caller is answered ``"caller": "found"`` (optional); aftercall keeps it with the result.

Why signed this way: the signature proves the request came from aftercall and was not altered;
signing the timestamp with the body lets a receiver refuse a captured request replayed later
(outside its tolerance), and ``Idempotency-Key`` lets it process each action once however often
it is delivered inside that window. :func:`verify_webhook_signature` does the first two checks.

Retries: the body of an action is byte-for-byte the same on every attempt (so a receiver can
compare it under the key); each attempt is signed afresh with the current time. Because the
receiver deduplicates on the key, a delivery that failed ambiguously (timeout, reset, 5xx) is
simply sent again.

A receiver answers 2xx (optionally JSON ``{"id": "..."}``, kept as the action's result), 401 for
a bad signature (aftercall re-reads its secret once: that is how a rotated signing secret is
picked up), 404/422 ``{"error": "unknown_contact"}`` for a customer it does not know, 429 with
``Retry-After`` to slow down, 5xx to have the delivery retried.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from aftercall.credentials import SecretCredentials
from aftercall.crm.base import CrmCall, CrmRecord, Customer, Disposition, SummaryNote, SupportTicket
from aftercall.crm.http import CrmHttpClient
from aftercall.errors import CrmRequestError, UnknownContactError
from aftercall.privacy import mask_email, mask_phone

#: Keys the CRM secret must hold.
SECRET_KEYS = ("url", "signing_secret")
SCHEMA_VERSION = "1"
TIMESTAMP_HEADER = "X-Aftercall-Timestamp"
SIGNATURE_HEADER = "X-Aftercall-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookSignatureError(ValueError):
    """A webhook request failed verification; the message says why (safe to log)."""


def sign_webhook(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-Aftercall-Signature`` value for ``body`` sent at ``timestamp``: ``v1=<hex>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    message = str(timestamp).encode("ascii") + b"." + body
    return "v1=" + hmac.new(key, message, hashlib.sha256).hexdigest()


def verify_webhook_signature(
    secret: str | bytes,
    timestamp: str | None,
    body: bytes,
    signature: str | None,
    tolerance_s: float = DEFAULT_TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> None:
    """For receivers: check a request's signature and age; raise :class:`WebhookSignatureError`.

    ``timestamp`` and ``signature`` are the ``X-Aftercall-Timestamp`` and
    ``X-Aftercall-Signature`` headers, ``body`` the raw request body (before any JSON parsing:
    re-serialising changes the bytes). The comparison is constant-time. A signature header may
    list several ``v1=`` values separated by commas; one match is enough. A request older (or
    newer) than ``tolerance_s`` is refused as a possible replay; inside the window, deduplicate
    on ``Idempotency-Key``. During a secret rotation, call this with each secret you accept.
    """
    if not timestamp or not timestamp.strip().isdigit():
        raise WebhookSignatureError(f"missing or malformed {TIMESTAMP_HEADER} header")
    if not signature:
        raise WebhookSignatureError(f"missing {SIGNATURE_HEADER} header")
    candidates = [part.strip()[3:] for part in signature.split(",") if part.strip().startswith("v1=")]
    if not candidates:
        raise WebhookSignatureError(f"{SIGNATURE_HEADER} has no v1= signature")
    expected = sign_webhook(secret, timestamp.strip(), body)[3:]
    # Compare against every candidate (no early exit), each in constant time.
    matches = [hmac.compare_digest(expected.encode(), candidate.encode()) for candidate in candidates]
    if not any(matches):
        raise WebhookSignatureError("signature does not match the body and timestamp")
    # The timestamp is signed, so once the signature holds its age can be trusted.
    age = (time.time() if now is None else now) - int(timestamp.strip())
    if abs(age) > tolerance_s:
        raise WebhookSignatureError(
            f"timestamp is {abs(age):.0f}s {'old' if age > 0 else 'in the future'}, outside the "
            f"{tolerance_s:g}s tolerance: refused as a possible replay"
        )


def caller_json(customer: Customer) -> dict[str, Any]:
    """The ``customer`` object of a delivery: phone and email (``null`` when absent), names when known."""
    caller: dict[str, Any] = {"phone": customer.phone, "email": customer.email}
    if customer.first_name:
        caller["first_name"] = customer.first_name
    if customer.last_name:
        caller["last_name"] = customer.last_name
    return caller


class WebhookCrm:
    name = "webhook"

    def __init__(
        self,
        credentials: SecretCredentials,
        url: str | None = None,
        *,
        allow_loopback_http: bool = False,
        unknown_caller_policy: str = "park",
        **http: Any,
    ) -> None:
        """``url`` overrides the secret's ``url`` (the template's ``CrmBaseUrl``);
        ``unknown_caller_policy`` is passed to the receiver with every delivery."""
        self._credentials = credentials
        self.unknown_caller_policy = unknown_caller_policy
        self._allow_loopback_http = allow_loopback_http
        self._http_options = http
        self._setup_lock = threading.Lock()
        self._client: CrmHttpClient | None = None
        if url is not None:  # refuse a bad override at once, before any secret is read
            self._client = CrmHttpClient(self.name, url, self._auth, allow_loopback_http=allow_loopback_http, **http)

    # --- actions -------------------------------------------------------------------------------

    def log_summary(self, note: SummaryNote, call: CrmCall) -> CrmRecord:
        payload = {"occurred_at": note.occurred_at.isoformat(), "summary": note.summary}
        return self._deliver("log_summary", note.conversation_id, note.customer, payload, call)

    def open_ticket(self, ticket: SupportTicket, call: CrmCall) -> CrmRecord:
        payload = {
            "ticket": {"subject": ticket.subject, "description": ticket.description, "priority": ticket.priority}
        }
        return self._deliver("open_ticket", ticket.conversation_id, ticket.customer, payload, call)

    def log_disposition(self, disposition: Disposition, call: CrmCall) -> CrmRecord:
        payload = {
            "disposition": disposition.disposition,
            "lead_status": disposition.lead_status,
            "note": disposition.note,
        }
        return self._deliver("log_disposition", disposition.conversation_id, disposition.customer, payload, call)

    # --- delivery --------------------------------------------------------------------------------

    def _deliver(
        self, action: str, conversation_id: str, customer: Customer, payload: Mapping[str, Any], call: CrmCall
    ) -> CrmRecord:
        document = {
            "schema_version": SCHEMA_VERSION,
            "action": action,
            "conversation_id": conversation_id,
            "unknown_caller_policy": self.unknown_caller_policy,
            "customer": caller_json(customer),
            **payload,
        }
        # Deterministic bytes: the same action always sends the same body under its key.
        body = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        key = f"{conversation_id}:{action}"
        try:
            answer = self._http().request(
                "POST",
                "",
                call,
                data=body,
                extra_headers={"Content-Type": "application/json", "Idempotency-Key": key},
                attempt_headers=lambda: self._signature_headers(body),
                safe_to_retry=True,  # the receiver deduplicates on Idempotency-Key
                expect_json=False,
            )
        except CrmRequestError as exc:
            if exc.status in (404, 422) and "unknown_contact" in str(exc):
                raise UnknownContactError(
                    f"the webhook receiver knows no customer with phone {mask_phone(customer.phone)} "
                    f"or email {mask_email(customer.email)}"
                ) from None
            raise
        received = answer.get("id") if isinstance(answer, dict) else None
        extra = {"action": action}
        caller = answer.get("caller") if isinstance(answer, dict) else None
        if caller in ("created", "found"):
            extra["caller"] = caller
        return CrmRecord("webhook", str(received) if received else key, extra)

    def _signature_headers(self, body: bytes) -> Mapping[str, str]:
        """Signed afresh for every attempt, with the (possibly just re-read) signing secret."""
        timestamp = str(int(time.time()))
        secret = self._credentials.get()["signing_secret"]
        return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign_webhook(secret, timestamp, body)}

    # --- setup and auth --------------------------------------------------------------------------

    def _http(self) -> CrmHttpClient:
        with self._setup_lock:
            if self._client is None:
                self._client = CrmHttpClient(
                    self.name,
                    self._credentials.get()["url"],
                    self._auth,
                    allow_loopback_http=self._allow_loopback_http,
                    **self._http_options,
                )
            return self._client

    @property
    def http(self) -> CrmHttpClient:
        return self._http()

    def _auth(self, force: bool) -> Mapping[str, str]:
        """No Authorization header: the signature is the credential. A forced call (after a 401)
        re-reads the secret, so the next attempt is signed with a rotated signing secret."""
        self._credentials.get(force)
        return {}
