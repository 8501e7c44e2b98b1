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

import copy
import itertools
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
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

OBJECT_TYPES = ("contacts", "notes", "tickets")
SEARCH_OPERATORS = (
    "EQ",
    "NEQ",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "IN",
)
MAX_FILTER_GROUPS = 5
MAX_SEARCH_LIMIT = 200
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


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(message: str, category: str = "VALIDATION_ERROR") -> dict[str, Any]:
    return {"status": "error", "message": message, "category": category, "correlationId": str(uuid.uuid4())}


# --- the in-memory CRM ------------------------------------------------------------------------


class _Store:
    """HubSpot-shaped objects by type; every public method takes the lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in OBJECT_TYPES}
        self._ids = itertools.count(1001)
        #: Object id -> when (monotonic) it shows in search.
        self.searchable_at: dict[str, float] = {}

    def create(
        self, kind: str, properties: Mapping[str, Any], associations: Iterable[str] = (), *, index_lag: float = 0.0
    ) -> dict[str, Any]:
        with self.lock:
            object_id = str(next(self._ids))
            stamp = _now_iso()
            props = {key: _as_property(value) for key, value in properties.items()}
            props.update({"hs_object_id": object_id, "hs_createdate": stamp, "hs_lastmodifieddate": stamp})
            if kind == "contacts":
                props.setdefault("createdate", stamp)
                props.setdefault("lastmodifieddate", stamp)
                _calculate_phones(props)
            self.searchable_at[object_id] = time.monotonic() + index_lag
            obj = {
                "id": object_id,
                "properties": props,
                "createdAt": stamp,
                "updatedAt": stamp,
                "archived": False,
                "associations": {"contacts": list(associations)},
            }
            self.objects[kind][object_id] = obj
            return copy.deepcopy(obj)

    def update(self, kind: str, object_id: str, properties: Mapping[str, Any]) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects[kind].get(object_id)
            if obj is None:
                return None
            stamp = _now_iso()
            obj["properties"].update({key: _as_property(value) for key, value in properties.items()})
            obj["properties"]["hs_lastmodifieddate"] = stamp
            if kind == "contacts":
                _calculate_phones(obj["properties"])
            obj["updatedAt"] = stamp
            return copy.deepcopy(obj)

    def get(self, kind: str, object_id: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects[kind].get(object_id)
            return copy.deepcopy(obj) if obj else None

    def all(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(obj) for obj in self.objects[kind].values()]

    def search(self, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Match under the lock without copying every object (searches stay cheap at volume)."""
        with self.lock:
            now = time.monotonic()
            indexed = [obj for obj in self.objects[kind].values() if self.searchable_at.get(obj["id"], 0.0) <= now]
            return copy.deepcopy(_search(indexed, body))

    def find_by_email(self, email: str) -> str | None:
        """The id of the contact with this email (HubSpot's unique key for contacts), searchable or not."""
        with self.lock:
            for obj in self.objects["contacts"].values():
                if obj["properties"].get("email", "").casefold() == email.casefold():
                    return str(obj["id"])
        return None

    def clear(self) -> None:
        with self.lock:
            for objects in self.objects.values():
                objects.clear()
            self.searchable_at.clear()


def _calculated_phone(typed: str) -> str:
    """HubSpot's ``hs_searchable_calculated_*`` value: digits only, without the country code.

    A number typed with ``+`` loses its country code; one typed without is kept as its digits.
    """
    digits = re.sub(r"\D", "", typed)
    if not typed.strip().startswith("+") or not digits:
        return digits
    for length in (1, 2, 3):  # ITU country codes are 1 to 3 digits and prefix-free
        if digits[:length] in _COUNTRY_CODES:
            return digits[length:]
    return digits


#: Country calling codes (ITU-T E.164 assignments) the fake strips from numbers typed with ``+``.
_COUNTRY_CODE_TEXT = (
    "1 7 20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 60 61 62 63 64 65 "
    "66 81 82 84 86 90 91 92 93 94 95 98 211 212 213 216 218 220 221 222 223 224 225 226 227 228 229 230 "
    "231 232 233 234 235 236 237 238 239 240 241 242 243 244 245 246 248 249 250 251 252 253 254 255 256 "
    "257 258 260 261 262 263 264 265 266 267 268 269 290 291 297 298 299 350 351 352 353 354 355 356 357 "
    "358 359 370 371 372 373 374 375 376 377 378 380 381 382 383 385 386 387 389 420 421 423 500 501 502 "
    "503 504 505 506 507 508 509 590 591 592 593 594 595 596 597 598 599 670 672 673 674 675 676 677 678 "
    "679 680 681 682 683 685 686 687 688 689 690 691 692 850 852 853 855 856 880 886 960 961 962 963 964 "
    "965 966 967 968 970 971 972 973 974 975 976 977 992 993 994 995 996 998 "
)
_COUNTRY_CODES = frozenset(_COUNTRY_CODE_TEXT.split())


def _calculate_phones(props: dict[str, str]) -> None:
    for typed, calculated in (
        ("phone", "hs_searchable_calculated_phone_number"),
        ("mobilephone", "hs_searchable_calculated_mobile_number"),
    ):
        if props.get(typed):
            props[calculated] = _calculated_phone(props[typed])
        else:
            props.pop(calculated, None)


def _as_property(value: Any) -> str:
    """HubSpot stores every property value as a string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"property values must be strings, numbers or booleans, not {type(value).__name__}")


def _filter_matches(obj: Mapping[str, Any], rule: Mapping[str, Any]) -> bool:
    props: Mapping[str, str] = obj["properties"]
    name = rule.get("propertyName")
    operator = rule.get("operator")
    if not isinstance(name, str) or operator not in SEARCH_OPERATORS:
        raise ValueError(f"invalid filter {dict(rule)!r}: needs propertyName and an operator in {SEARCH_OPERATORS}")
    actual = props.get(name, "") if name != "hs_object_id" else obj["id"]
    if operator == "HAS_PROPERTY":
        return actual != ""
    if operator == "NOT_HAS_PROPERTY":
        return actual == ""
    if operator == "IN":
        values = rule.get("values")
        if not isinstance(values, list):
            raise ValueError("operator IN needs a 'values' list")
        return actual.casefold() in {_as_property(v).casefold() for v in values}
    if "value" not in rule:
        raise ValueError(f"operator {operator} needs a 'value'")
    expected = _as_property(rule["value"]).casefold()
    if operator == "EQ":
        return actual != "" and actual.casefold() == expected
    if operator == "NEQ":
        return actual.casefold() != expected
    # CONTAINS_TOKEN: HubSpot tokenises; a case-insensitive substring match is close enough here.
    contained = expected.replace("*", "") in actual.casefold()
    return contained if operator == "CONTAINS_TOKEN" else not contained


def _search(objects: list[dict[str, Any]], body: Mapping[str, Any]) -> dict[str, Any]:
    groups = body.get("filterGroups") or []
    if not isinstance(groups, list) or len(groups) > MAX_FILTER_GROUPS:
        raise ValueError(f"filterGroups must be a list of at most {MAX_FILTER_GROUPS} groups")
    limit = body.get("limit", 10)
    if not isinstance(limit, int) or not 0 < limit <= MAX_SEARCH_LIMIT:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_SEARCH_LIMIT}")
    try:
        after = int(body.get("after") or 0)
    except (TypeError, ValueError):
        raise ValueError("after must be a paging cursor from an earlier answer") from None
    wanted = body.get("properties")

    def matches(obj: dict[str, Any]) -> bool:
        if not groups:
            return True
        # Groups are OR'ed; the filters inside a group are AND'ed (HubSpot's semantics).
        return any(all(_filter_matches(obj, rule) for rule in group.get("filters") or []) for group in groups)

    hits = sorted((obj for obj in objects if matches(obj)), key=lambda o: int(o["id"]))
    page = hits[after : after + limit]
    results = []
    for obj in page:
        props = obj["properties"]
        if isinstance(wanted, list) and wanted:
            props = {k: v for k, v in props.items() if k in wanted or k in ("hs_object_id", "hs_createdate")}
        results.append(
            {
                "id": obj["id"],
                "properties": props,
                "createdAt": obj["createdAt"],
                "updatedAt": obj["updatedAt"],
                "archived": False,
            }
        )
    answer: dict[str, Any] = {"total": len(hits), "results": results}
    if after + limit < len(hits):
        answer["paging"] = {"next": {"after": str(after + limit)}}
    return answer


def _public(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object as HubSpot's API returns it (associations only on request)."""
    return {key: copy.deepcopy(value) for key, value in obj.items() if key != "associations"}


# --- the server ---------------------------------------------------------------------------------


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
