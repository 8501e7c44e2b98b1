"""A fake HubSpot CRM: a real HTTP server on loopback with fault injection.

Why it exists: the runtime's CRM code must be tested against a real protocol peer (sockets,
keep-alive, status codes, headers, timeouts), not against mocks of our own functions. This
server speaks the subset of the HubSpot CRM v3 API that ``aftercall.crm.hubspot`` uses, with
HubSpot's shapes, and can be told to fail in the ways real CRMs fail: 5xx, 429 with
``Retry-After``, hanging past a client's timeout, resetting the connection, applying a write
and then answering 500 (the ambiguous case), added latency, and a global rate limit.

The server, fault rules, request log and generic admin endpoints live in
:mod:`aftercall_ops.fakes.http`, shared with the other fakes. Faults and seed data can be set
from Python (:class:`FakeCrm`) or over HTTP through the unauthenticated ``/__admin/``
endpoints, so another process (the CLI, a demo, the local stack) can flip them while it runs.
``aftercall fake hubspot --port 0`` runs it standalone and prints its URL.

Admin endpoints (no auth):

* ``GET /__admin/state``: contacts, notes, tickets, request counts, active faults
* ``GET /__admin/requests``: the request log
* ``POST /__admin/faults`` (a rule or a list of rules), ``GET``/``DELETE /__admin/faults``;
  e.g. ``[{"kind": "status", "status": 503, "method": "POST", "path": "/crm/v3/objects/notes$",
  "times": 2}]`` (a path is a prefix; a trailing ``$`` makes it exact). See :class:`Fault`.
* ``POST /__admin/contacts`` (``{"phone", "email", "properties"}`` or a list): seed contacts
* ``POST /__admin/tokens`` (``{"token": "...", "keep_old": false}``): rotate the access token
* ``POST /__admin/config`` (``{"rate_limit_per_second": 5, "rate_limit_retry_after": 1}``)
* ``POST /__admin/reset``: forget data, faults and the request log

As inconvenient as HubSpot, by default (each point quotes or follows HubSpot's documentation):

* Phones are stored as typed (``(415) 555-0134``, ``+1 415-555-0134``); ``EQ`` matches the stored
  string exactly. Contacts carry HubSpot's calculated ``hs_searchable_calculated_phone_number`` and
  ``hs_searchable_calculated_mobile_number``: the number's digits, without the country code.
* Index lag: "it may take a few moments for newly created or updated objects to appear in search
  results": an object created through the API shows in search ``index_lag_seconds`` (2 s) later.
  Contacts seeded through ``add_contact`` are old records, searchable at once.
* Limits: "search endpoints are rate limited to four requests per second per authentication
  token", and searches count in the general limit, 100 requests per rolling 10 s for a Starter
  private app. Both answer 429 with HubSpot's body (``policyName`` ``SECONDLY`` or
  ``TEN_SECONDLY_ROLLING``) and no ``Retry-After``; other answers carry ``X-HubSpot-RateLimit-Max``,
  ``-Remaining`` and ``-Interval-Milliseconds`` (search answers carry none).
* A contact with an email that exists is refused: ``409`` "Contact already exists. Existing ID: N";
  an invalid email is refused with ``400 INVALID_EMAIL``.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

from aftercall_ops.fakes.http import (
    FAULT_KINDS,
    Answer,
    FakeAdmin,
    FakeHttpService,
    Fault,
    FaultKind,
    Request,
    RequestRecord,
    path_matches,
)
from aftercall_ops.fakes.hubspot_store import OBJECT_TYPES, _error, _public, _Store

__all__ = [
    "DEFAULT_TOKEN",
    "FAULT_KINDS",
    "FakeCrm",
    "FakeCrmAdmin",
    "Fault",
    "FaultKind",
    "RequestRecord",
    "path_matches",
]

DEFAULT_TOKEN = "fake-hubspot-token"  # noqa: S105 - the fake's own test token, not a secret

#: HubSpot's answer to a request without valid credentials (wording as the real API's).
UNAUTHORIZED_BODY = {
    "status": "error",
    "message": "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
    "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
    "category": "INVALID_AUTHENTICATION",
}
RATE_LIMIT_BODY = {
    "status": "error",
    "message": "You have reached your secondly limit.",
    "errorType": "RATE_LIMIT",
    "policyName": "SECONDLY",
    "category": "RATE_LIMITS",
}
#: HubSpot's 429 bodies (no Retry-After header comes with them).
SEARCH_RATE_LIMIT_BODY = {
    "status": "error",
    "message": "You have reached your secondly limit.",
    "errorType": "RATE_LIMIT",
    "policyName": "SECONDLY",
}
TEN_SECONDLY_BODY = {
    "status": "error",
    "message": "You have reached your ten_secondly_rolling limit.",
    "errorType": "RATE_LIMIT",
    "policyName": "TEN_SECONDLY_ROLLING",
}
#: HubSpot's published defaults: search 4/s per token, general 100 per 10 s (Starter private app).
SEARCH_LIMIT_PER_SECOND = 4
GENERAL_LIMIT = 100
GENERAL_WINDOW_SECONDS = 10.0
INDEX_LAG_SECONDS = 2.0
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_OBJECT_PATH = re.compile(r"^/crm/v3/objects/(?P<type>[a-z]+)(?:/(?P<rest>[^/]+))?/?$")


class FakeCrm(FakeHttpService):
    """The fake HubSpot: start it, seed contacts, point ``HubSpotCrm`` at ``url``, add faults.

    Every accessor returns copies, so tests can inspect state while requests are in flight.
    """

    server_name = "FakeHubSpot/1.0"
    thread_name = "fake-crm"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = DEFAULT_TOKEN,
        seed: int = 0,
        rate_limit_per_second: float | None = None,
        rate_limit_retry_after: float | None = None,
        log_size: int = 100_000,
        search_limit_per_second: int | None = SEARCH_LIMIT_PER_SECOND,
        general_limit: int | None = GENERAL_LIMIT,
        index_lag_seconds: float = INDEX_LAG_SECONDS,
    ) -> None:
        """HubSpot's limits and index lag are on by default; ``None``/``0`` turns one off (say why)."""
        super().__init__(
            host=host,
            port=port,
            seed=seed,
            rate_limit_per_second=rate_limit_per_second,
            rate_limit_retry_after=rate_limit_retry_after,
            log_size=log_size,
        )
        self._store = _Store()
        self._tokens = {token}
        self._token = token
        self.search_limit_per_second = search_limit_per_second
        self.general_limit = general_limit
        self.index_lag_seconds = index_lag_seconds
        self._searches: dict[str, deque[float]] = {}
        self._window: dict[str, deque[float]] = {}

    @property
    def url(self) -> str:
        """The base URL to give the HubSpot adapter (``http://127.0.0.1:<port>``)."""
        return f"http://{self.host}:{self.port}"

    # --- credentials -----------------------------------------------------------------------------

    @property
    def token(self) -> str:
        """The current valid access token."""
        with self._lock:
            return self._token

    def rotate_token(self, new: str, *, keep_old: bool = False) -> None:
        """Make ``new`` the valid token; the old one stops working unless ``keep_old``."""
        with self._lock:
            self._tokens = {*self._tokens, new} if keep_old else {new}
            self._token = new

    # --- data --------------------------------------------------------------------------------------

    def add_contact(
        self, phone: str | None = None, email: str | None = None, properties: Mapping[str, Any] | None = None
    ) -> str:
        """Seed a contact; returns its id."""
        props: dict[str, Any] = dict(properties or {})
        if phone is not None:
            props["phone"] = phone
        if email is not None:
            props["email"] = email
        return str(self._store.create("contacts", props)["id"])

    @property
    def contacts(self) -> list[dict[str, Any]]:
        return self._store.all("contacts")

    @property
    def notes(self) -> list[dict[str, Any]]:
        return self._store.all("notes")

    @property
    def tickets(self) -> list[dict[str, Any]]:
        return self._store.all("tickets")

    def contact(self, contact_id: str) -> dict[str, Any] | None:
        return self._store.get("contacts", contact_id)

    def notes_for(self, conversation_marker: str) -> list[dict[str, Any]]:
        """Notes whose body carries the marker (``aftercall-<conversation id>``)."""
        return [n for n in self.notes if conversation_marker in n["properties"].get("hs_note_body", "")]

    def tickets_for(self, conversation_marker: str) -> list[dict[str, Any]]:
        """Tickets whose content carries the marker."""
        return [t for t in self.tickets if conversation_marker in t["properties"].get("content", "")]

    # --- the service hooks -------------------------------------------------------------------------

    def _state_data(self) -> dict[str, Any]:
        return {"contacts": self.contacts, "notes": self.notes, "tickets": self.tickets}

    def _reset_data(self) -> None:
        self._store.clear()

    def _authorized(self, request: Request) -> bool:
        authorization = request.header("Authorization")
        if not authorization or not authorization.startswith("Bearer "):
            return False
        with self._lock:
            return authorization[len("Bearer ") :].strip() in self._tokens

    def _unauthorized(self, request: Request) -> Answer:
        return Answer(401, {**UNAUTHORIZED_BODY, "correlationId": str(uuid.uuid4())})

    def _rate_limited(self, status: int | None, retry_after: str | None, body: Any) -> Answer:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return Answer(status or 429, body if body is not None else RATE_LIMIT_BODY, headers)

    def _fault_body(self, fault: Fault) -> Any:
        return _error(f"injected fault {fault.id}: HTTP {fault.status or 500}", "INTERNAL_ERROR")

    def _admin_error(self, message: str) -> Any:
        return _error(message)

    def _limited(self, request: Request, search: bool) -> Answer | None:
        """HubSpot's two limits for this token: the search one (per second), the general one (per rolling 10 s)."""
        token = (request.header("Authorization") or "")[len("Bearer ") :].strip()
        now = time.monotonic()
        with self._lock:
            window = self._window.setdefault(token, deque())
            while window and window[0] <= now - GENERAL_WINDOW_SECONDS:
                window.popleft()
            if search and self.search_limit_per_second:
                searches = self._searches.setdefault(token, deque())
                while searches and searches[0] <= now - 1.0:
                    searches.popleft()
                if len(searches) >= self.search_limit_per_second:
                    return Answer(429, {**SEARCH_RATE_LIMIT_BODY, "correlationId": str(uuid.uuid4())})
            if self.general_limit and len(window) >= self.general_limit:
                return Answer(429, {**TEN_SECONDLY_BODY, "correlationId": str(uuid.uuid4())}, self._budget_headers(0))
            if search and self.search_limit_per_second:
                self._searches[token].append(now)
            window.append(now)
        return None

    def _budget_headers(self, remaining: int) -> dict[str, str]:
        if not self.general_limit:
            return {}
        return {
            "X-HubSpot-RateLimit-Max": str(self.general_limit),
            "X-HubSpot-RateLimit-Remaining": str(max(0, remaining)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(GENERAL_WINDOW_SECONDS * 1000)),
        }

    def _route(self, request: Request) -> Answer:
        search = request.method == "POST" and request.path.endswith("/search")
        limited = self._limited(request, search)
        if limited is not None:
            return limited
        answer = self._api(request)
        if not search and self.general_limit:
            answer.headers.update(self._budget_headers(self._remaining(request)))
        return answer

    def _remaining(self, request: Request) -> int:
        token = (request.header("Authorization") or "")[len("Bearer ") :].strip()
        now = time.monotonic()
        with self._lock:
            window = self._window.get(token, deque())
            inside = sum(1 for at in window if at > now - GENERAL_WINDOW_SECONDS)
        return (self.general_limit or 0) - inside

    def _api(self, request: Request) -> Answer:
        method, path = request.method, request.path
        match = _OBJECT_PATH.match(path)
        if match is None or match["type"] not in OBJECT_TYPES:
            return Answer(404, _error(f"no route for {method} {path}", "OBJECT_NOT_FOUND"))
        kind, rest = match["type"], match["rest"]
        try:
            body = request.json()
            if method == "POST" and rest is None:
                return self._create(kind, body)
            if method == "POST" and rest == "search":
                if not isinstance(body, dict):
                    raise ValueError("the search body must be a JSON object")
                return Answer(200, self._store.search(kind, body))
            if rest is not None and rest != "search" and method in ("GET", "PATCH"):
                return self._one(kind, rest, method, body)
        except ValueError as exc:
            return Answer(400, _error(str(exc)))
        return Answer(405, _error(f"{method} is not supported on {path}", "METHOD_NOT_ALLOWED"))

    def _create(self, kind: str, body: Any) -> Answer:
        if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
            raise ValueError("the body must be a JSON object with a 'properties' object")
        props: dict[str, Any] = body["properties"]
        missing = {"notes": ("hs_timestamp",), "tickets": ("subject", "hs_pipeline_stage")}.get(kind, ())
        absent = [name for name in missing if props.get(name) in (None, "")]
        if absent:
            raise ValueError(f"missing required properties for {kind}: {', '.join(absent)}")
        associations = body.get("associations") or []
        if not isinstance(associations, list):
            raise ValueError("associations must be a list")
        targets = []
        for association in associations:
            to = association.get("to") if isinstance(association, dict) else None
            target = str(to.get("id", "")) if isinstance(to, dict) else ""
            valid = isinstance(association, dict) and bool(association.get("types"))
            if not valid or self._store.get("contacts", target) is None:
                raise ValueError(f"One or more associations are invalid (to.id {target!r})")
            targets.append(target)
        if kind == "contacts" and props.get("email"):
            email = str(props["email"])
            if not _EMAIL.match(email):
                return Answer(
                    400,
                    {
                        **_error(f"Property values were not valid: email {email!r} is not a valid email address"),
                        "errors": [{"message": "Email address is invalid", "code": "INVALID_EMAIL"}],
                    },
                )
            with self._store.lock:  # the check and the create as one step, as HubSpot's unique email is
                existing = self._store.find_by_email(email)
                if existing is None:
                    obj = self._store.create(kind, props, targets, index_lag=self.index_lag_seconds)
            if existing is not None:
                return Answer(409, _error(f"Contact already exists. Existing ID: {existing}", "CONFLICT"))
            return Answer(201, _public(obj))
        obj = self._store.create(kind, props, targets, index_lag=self.index_lag_seconds)
        return Answer(201, _public(obj))

    def _one(self, kind: str, object_id: str, method: str, body: Any) -> Answer:
        if method == "GET":
            obj = self._store.get(kind, object_id)
        else:
            if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
                raise ValueError("the body must be a JSON object with a 'properties' object")
            obj = self._store.update(kind, object_id, body["properties"])
        if obj is None:
            return Answer(404, _error("resource not found", "OBJECT_NOT_FOUND"))
        return Answer(200, _public(obj))

    def _admin_route(self, method: str, route: str, body: Any) -> Answer | None:
        if route == "contacts" and method == "POST":
            items = body if isinstance(body, list) else [body]
            ids = []
            for item in items:
                if not isinstance(item, dict):
                    raise ValueError("send a contact object or a list of them")
                ids.append(self.add_contact(item.get("phone"), item.get("email"), item.get("properties")))
            return Answer(201, {"ids": ids})
        if route == "tokens" and method == "POST":
            if not isinstance(body, dict) or not isinstance(body.get("token"), str) or not body["token"]:
                raise ValueError('send {"token": "<new token>", "keep_old": false}')
            self.rotate_token(body["token"], keep_old=bool(body.get("keep_old")))
            return Answer(200, {"rotated": True})
        return None


# --- a client for the admin endpoints (for other processes) --------------------------------------


class FakeCrmAdmin(FakeAdmin):
    """Drive a running fake CRM from another process (CLI, demo) through ``/__admin/``."""

    def add_contact(
        self, phone: str | None = None, email: str | None = None, properties: Mapping[str, Any] | None = None
    ) -> str:
        answer = self._call("POST", "contacts", {"phone": phone, "email": email, "properties": dict(properties or {})})
        return str(answer["ids"][0])

    def rotate_token(self, token: str, *, keep_old: bool = False) -> None:
        self._call("POST", "tokens", {"token": token, "keep_old": keep_old})


# --- standalone ---------------------------------------------------------------------------------
