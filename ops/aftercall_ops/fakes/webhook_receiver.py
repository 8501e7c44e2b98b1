"""A webhook receiver that does everything the aftercall webhook contract asks of a receiver.

Why it exists: the webhook adapter is tested against a receiver written the way we tell users to
write theirs, and it doubles as a reference. It checks the signature with its own HMAC code (not
the runtime's helper, so a bug shared by signer and verifier cannot hide), then, in order:

* a missing or wrong ``X-Aftercall-Signature`` → 401 ``{"error": "invalid signature"}``
  (signatures made with any accepted secret pass: keep the old one during a rotation);
* a timestamp outside the tolerance → 400 ``{"error": "stale timestamp"}``: a captured request
  replayed later is refused;
* no ``Idempotency-Key`` → 400; a key already processed with the same body → the first answer
  again, with ``Idempotent-Replayed: true``, and nothing processed twice; the same key with a
  different body → 422;
* a caller that breaks the contract (no ``unknown_caller_policy``, a phone that is not E.164 or
  digits, neither phone nor email) → 422 ``{"error": "invalid_customer"}``;
* a customer not in ``known_customers`` (when that is set): under ``unknown_caller_policy: park``
  404 ``{"error": "unknown_contact"}``; under ``create`` their record is made once (keyed on the
  phone, else the email) and the answer says ``"caller": "created"`` (else ``"found"``);
* otherwise the delivery is kept and answered 200 ``{"id": "wh_<n>"}`` (or plain ``OK``).

Faults are those of :mod:`aftercall_ops.fakes.http`. Admin extras: ``POST /__admin/secret``
(``{"secret", "keep_old"}``), ``POST /__admin/customers`` (``{"known": [...]}``).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from aftercall_ops.fakes.http import Answer, FakeAdmin, FakeHttpService, Fault, Request

DEFAULT_SECRET = "fake-webhook-signing-secret"  # noqa: S105 - the fake's own test secret
DEFAULT_PATH = "/hooks/aftercall"
DEFAULT_TOLERANCE_SECONDS = 300
_PHONE = re.compile(r"^\+?[0-9]{3,15}$")


@dataclass
class Delivery:
    """One action the receiver processed (replays and refusals are not deliveries)."""

    key: str
    body: Any
    timestamp: int
    received: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def caller_problem(body: Any) -> str | None:
    """What is wrong with a delivery's caller (``None``: nothing), as the contract in
    :mod:`aftercall.crm.webhook` describes it."""
    if not isinstance(body, dict) or body.get("unknown_caller_policy") not in ("create", "park"):
        return "unknown_caller_policy must be 'create' or 'park'"
    customer = body.get("customer")
    if not isinstance(customer, dict) or "phone" not in customer or "email" not in customer:
        return "customer must be an object with phone and email"
    phone, email = customer["phone"], customer["email"]
    if phone is None and email is None:
        return "customer has neither a phone nor an email"
    if phone is not None and not (isinstance(phone, str) and _PHONE.match(phone)):
        return "customer.phone must be E.164 (or the digits of a number that cannot be read)"
    if email is not None and not (isinstance(email, str) and "@" in email):
        return "customer.email must be an address"
    if any(not isinstance(customer.get(name, ""), str) for name in ("first_name", "last_name")):
        return "customer names must be strings"
    return None


class FakeWebhookReceiver(FakeHttpService):
    """A receiver on loopback: point ``WebhookCrm`` at :attr:`endpoint` with :attr:`secret`."""

    server_name = "FakeWebhookReceiver/1.0"
    thread_name = "fake-webhook"

    def __init__(
        self,
        *,
        secret: str = DEFAULT_SECRET,
        path: str = DEFAULT_PATH,
        tolerance_s: float = DEFAULT_TOLERANCE_SECONDS,
        known_customers: Iterable[str] | None = None,
        plain_text: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.path = path
        self.tolerance_s = tolerance_s
        self.plain_text = plain_text
        self._data_lock = threading.RLock()
        self._secrets = [secret]
        self._known = set(known_customers) if known_customers is not None else None
        self._processed: dict[str, tuple[str, Answer]] = {}
        self._deliveries: list[Delivery] = []
        self.replays = 0
        self.refused: list[str] = []
        #: The callers it created a record for (``unknown_caller_policy: create``), one entry each.
        self.created_callers: list[str] = []

    @property
    def endpoint(self) -> str:
        """The URL to configure as the webhook's ``url``."""
        return f"{self.url}{self.path}"

    # --- secrets and data ------------------------------------------------------------------------

    @property
    def secret(self) -> str:
        with self._lock:
            return self._secrets[-1]

    def rotate_secret(self, new: str, *, keep_old: bool = False) -> None:
        """Accept ``new``; the old secret stops verifying unless ``keep_old``."""
        with self._lock:
            self._secrets = [*self._secrets, new] if keep_old else [new]

    def set_known_customers(self, known: Iterable[str] | None) -> None:
        """Phones/emails the receiver knows (``None``: everyone)."""
        with self._data_lock:
            self._known = set(known) if known is not None else None

    @property
    def deliveries(self) -> list[Delivery]:
        with self._data_lock:
            return [copy.deepcopy(d) for d in self._deliveries]

    def deliveries_for(self, conversation_id: str) -> list[Delivery]:
        return [
            d for d in self.deliveries if isinstance(d.body, dict) and d.body.get("conversation_id") == conversation_id
        ]

    # --- the service hooks -------------------------------------------------------------------------

    def _state_data(self) -> dict[str, Any]:
        return {
            "deliveries": [d.to_json() for d in self.deliveries],
            "replays": self.replays,
            "refused": list(self.refused),
        }

    def _reset_data(self) -> None:
        with self._data_lock:
            self._processed.clear()
            self._deliveries.clear()
            self.replays = 0
            self.refused.clear()
            self.created_callers.clear()

    def _authorized(self, request: Request) -> bool:
        timestamp = request.header("X-Aftercall-Timestamp") or ""
        header = request.header("X-Aftercall-Signature") or ""
        candidates = [part.strip()[3:] for part in header.split(",") if part.strip().startswith("v1=")]
        if not timestamp or not candidates:
            return False
        message = timestamp.encode() + b"." + request.raw
        with self._lock:
            secrets = list(self._secrets)
        for secret in secrets:
            expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
            if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
                return True
        return False

    def _unauthorized(self, request: Request) -> Answer:
        self._refuse("invalid signature")
        return Answer(401, {"error": "invalid signature"})

    def _rate_limited(self, status: int | None, retry_after: str | None, body: Any) -> Answer:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return Answer(status or 429, body if body is not None else {"error": "slow down"}, headers)

    def _fault_body(self, fault: Fault) -> Any:
        return {"error": f"injected fault {fault.id}: HTTP {fault.status or 500}"}

    def _route(self, request: Request) -> Answer:
        if request.path != self.path:
            return Answer(404, {"error": "no such hook"})
        if request.method != "POST":
            return Answer(405, {"error": "POST only"})
        timestamp = request.header("X-Aftercall-Timestamp") or ""
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > self.tolerance_s:
            self._refuse("stale timestamp")
            return Answer(400, {"error": "stale timestamp"})
        key = request.header("Idempotency-Key")
        if not key:
            self._refuse("no idempotency key")
            return Answer(400, {"error": "Idempotency-Key is required"})
        try:
            body = request.json()
        except ValueError:
            self._refuse("not JSON")
            return Answer(400, {"error": "the body is not JSON"})
        digest = hashlib.sha256(request.raw).hexdigest()
        with self._data_lock:
            seen = self._processed.get(key)
            if seen is not None:
                if seen[0] != digest:
                    self._refuse("idempotency key reused with a different body")
                    return Answer(422, {"error": "idempotency key reused with a different body"})
                self.replays += 1
                first = seen[1]
                return Answer(
                    first.status,
                    copy.deepcopy(first.body),
                    {**first.headers, "Idempotent-Replayed": "true"},
                    first.text,
                )
            problem = caller_problem(body)
            if problem is not None:
                self._refuse(problem)
                return Answer(422, {"error": "invalid_customer", "detail": problem})
            customer, policy = body["customer"], body["unknown_caller_policy"]
            ids = {customer.get("phone"), customer.get("email")} - {None}
            caller = None
            if self._known is not None:
                caller = "found" if ids & self._known else "created"
                if caller == "created":
                    if policy == "park":
                        return Answer(404, {"error": "unknown_contact"})
                    # One record per caller, keyed on the phone (else the email), as the contract asks.
                    self._known.add(customer.get("phone") or customer["email"])
                    self.created_callers.append(customer.get("phone") or customer["email"])
            self._deliveries.append(Delivery(key, body, int(timestamp), time.monotonic()))
            number = len(self._deliveries)
            reply: dict[str, Any] = {"id": f"wh_{number}"} | ({"caller": caller} if caller else {})
            answer = Answer(200, None, text="OK") if self.plain_text else Answer(200, reply)
            self._processed[key] = (digest, copy.deepcopy(answer))
            return answer

    def _refuse(self, reason: str) -> None:
        with self._data_lock:
            self.refused.append(reason)

    def _admin_route(self, method: str, route: str, body: Any) -> Answer | None:
        if route == "secret" and method == "POST":
            if not isinstance(body, dict) or not isinstance(body.get("secret"), str) or not body["secret"]:
                raise ValueError('send {"secret": "<new secret>", "keep_old": false}')
            self.rotate_secret(body["secret"], keep_old=bool(body.get("keep_old")))
            return Answer(200, {"rotated": True})
        if route == "customers" and method == "POST":
            if not isinstance(body, dict):
                raise ValueError('send {"known": ["+1415...", "jane@example.com"]} or {"known": null}')
            known = body.get("known")
            self.set_known_customers([str(k) for k in known] if isinstance(known, list) else None)
            return Answer(200, {"known": known})
        return None


class FakeWebhookReceiverAdmin(FakeAdmin):
    """Drive a running fake receiver from another process through ``/__admin/``."""

    def rotate_secret(self, secret: str, *, keep_old: bool = False) -> None:
        self._call("POST", "secret", {"secret": secret, "keep_old": keep_old})

    def set_known_customers(self, known: Sequence[str] | None) -> None:
        self._call("POST", "customers", {"known": list(known) if known is not None else None})
