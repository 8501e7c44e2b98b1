"""A fake HubSpot CRM: a real HTTP server on loopback with fault injection.

Why it exists: the runtime's CRM code must be tested against a real protocol peer (sockets,
keep-alive, status codes, headers, timeouts), not against mocks of our own functions. This
server speaks the subset of the HubSpot CRM v3 API that ``aftercall.crm.hubspot`` uses, with
HubSpot's shapes, and can be told to fail in the ways real CRMs fail: 5xx, 429 with
``Retry-After``, hanging past a client's timeout, resetting the connection, applying a write
and then answering 500 (the ambiguous case), added latency, and a global rate limit.

The server, fault rules, request log and generic admin endpoints live in
:mod:`aftercall_ops.fake_http`, shared with the other fakes. Faults and seed data can be set
from Python (:class:`FakeCrm`) or over HTTP through the unauthenticated ``/__admin/``
endpoints, so another process (the CLI, a demo, the local stack) can flip them while it runs.
``python -m aftercall_ops.fake_crm --port 0`` runs it standalone and prints its URL.

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
"""

from __future__ import annotations

import argparse
import copy
import itertools
import re
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aftercall_ops.fake_http import (
    FAULT_KINDS,
    Answer,
    FakeAdmin,
    FakeHttpService,
    Fault,
    FaultKind,
    Request,
    RequestRecord,
    path_matches,
    serve_until_signalled,
)

__all__ = [
    "DEFAULT_TOKEN",
    "FAULT_KINDS",
    "FakeCrm",
    "FakeCrmAdmin",
    "Fault",
    "FaultKind",
    "RequestRecord",
    "main",
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

    def create(self, kind: str, properties: Mapping[str, Any], associations: Iterable[str] = ()) -> dict[str, Any]:
        with self.lock:
            object_id = str(next(self._ids))
            stamp = _now_iso()
            props = {key: _as_property(value) for key, value in properties.items()}
            props.update({"hs_object_id": object_id, "hs_createdate": stamp, "hs_lastmodifieddate": stamp})
            if kind == "contacts":
                props.setdefault("createdate", stamp)
                props.setdefault("lastmodifieddate", stamp)
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
            return copy.deepcopy(_search(list(self.objects[kind].values()), body))

    def clear(self) -> None:
        with self.lock:
            for objects in self.objects.values():
                objects.clear()


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
    ) -> None:
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

    def _route(self, request: Request) -> Answer:
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
        obj = self._store.create(kind, props, targets)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake CRM until interrupted; prints its URL as the first line on stdout."""
    parser = argparse.ArgumentParser(
        prog="python -m aftercall_ops.fake_crm", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="port (0 picks a free one)")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the valid access token")
    parser.add_argument("--seed", type=int, default=0, help="seed for probabilistic faults")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests per second before 429")
    parser.add_argument(
        "--contact", action="append", default=[], metavar="PHONE[,EMAIL]", help="seed a contact (repeatable)"
    )
    args = parser.parse_args(argv)
    crm = FakeCrm(
        host=args.host,
        port=args.port,
        token=args.token,
        seed=args.seed,
        rate_limit_per_second=args.rate_limit,
    )
    for spec in args.contact:
        phone, _, email = spec.partition(",")
        crm.add_contact(phone=phone or None, email=email or None)
    banner = f"fake HubSpot CRM on {{url}} (token {args.token!r}); admin at {{url}}/__admin/state"
    return serve_until_signalled(crm, banner)


if __name__ == "__main__":
    raise SystemExit(main())
