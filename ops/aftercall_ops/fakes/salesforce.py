"""A fake Salesforce: the REST API subset ``aftercall.crm.salesforce`` uses, on loopback.

Why it exists: the Salesforce adapter must be tested against a real protocol peer that keeps
Salesforce's semantics where our correctness depends on them, and fails the way Salesforce
fails. It implements:

* ``POST /services/oauth2/token`` (client credentials flow; ``invalid_client`` on a wrong
  secret); bearer tokens it issued are valid until :meth:`FakeSalesforce.revoke_tokens` or a
  client-secret rotation (then 401 ``INVALID_SESSION_ID``, as an expired session).
* ``GET /services/data/vXX.X/query?q=`` for a SOQL subset: ``SELECT … FROM … WHERE`` with
  ``=``/``!=``/``IN``, ``AND``/``OR``/parentheses, string/boolean/null literals with SOQL
  escapes, ``ORDER BY … ASC|DESC``, ``LIMIT``; string comparisons ignore case, as SOQL does.
* ``PATCH /services/data/vXX.X/sobjects/<Object>/<ExternalIdField>/<value>``: upsert on an
  external id. No match creates (201, ``created: true``); one match updates (200 with
  ``created: false`` from API 46.0 on, 204 without a body before); several matches answer 300;
  a field that is not an external id of the object answers 404 ``NOT_FOUND``.
* ``GET``/``PATCH /services/data/vXX.X/sobjects/<Object>/<Id>`` and ``GET`` by external id.
* Validation with Salesforce's error shape ``[{"message", "errorCode", "fields"}]``: unknown
  fields (``INVALID_FIELD``), restricted picklists (Lead ``Status``, Case ``Priority``, Task
  ``Status``/``Priority``), references (``WhoId`` must be a Contact or Lead, ``ContactId`` a
  Contact).

Faults are those of :mod:`aftercall_ops.fakes.http`; a ``rate_limit`` fault answers 403
``REQUEST_LIMIT_EXCEEDED`` unless it names another status (429). Admin extras:
``POST /__admin/records`` (``{"sobject", "fields"}``), ``POST /__admin/credentials``
(``{"client_secret", "revoke_tokens"}``), ``POST /__admin/revoke``.
"""

from __future__ import annotations

import copy
import itertools
import re
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

from aftercall_ops.fakes.http import Answer, FakeAdmin, FakeHttpService, Fault, Request

DEFAULT_CLIENT_ID = "fake-salesforce-client-id"
DEFAULT_CLIENT_SECRET = "fake-salesforce-client-secret"  # noqa: S105 - the fake's own test secret
DEFAULT_EXTERNAL_ID_FIELD = "Aftercall_Conversation_Id__c"
TOKEN_PATH = "/services/oauth2/token"  # noqa: S105 - a URL path
LEAD_STATUSES = ("Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted")
#: API 46.0 made an upsert that updates answer 200 with a body; before, 204 without one.
UPSERT_BODY_SINCE = (46, 0)

#: Writable fields per object; the system fields (Id, dates) are added by the store.
FIELDS: dict[str, frozenset[str]] = {
    "Contact": frozenset({"FirstName", "LastName", "Phone", "MobilePhone", "Email", "AccountId"}),
    "Lead": frozenset({"FirstName", "LastName", "Company", "Phone", "MobilePhone", "Email", "Status", "IsConverted"}),
    "Task": frozenset(
        {"Subject", "Description", "Status", "Priority", "ActivityDate", "WhoId", "WhatId", "Type", "CallDisposition"}
    ),
    "Case": frozenset({"Subject", "Description", "Priority", "Status", "Origin", "ContactId", "SuppliedPhone"}),
}
SYSTEM_FIELDS = frozenset({"Id", "CreatedDate", "LastModifiedDate"})
PICKLISTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Case", "Priority"): ("High", "Medium", "Low"),
    ("Task", "Status"): ("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"),
    ("Task", "Priority"): ("High", "Normal", "Low"),
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "Lead": {"Status": "Open - Not Contacted", "IsConverted": False},
    "Task": {"Status": "Not Started", "Priority": "Normal"},
    "Case": {"Status": "New", "Priority": "Medium"},
}
ID_PREFIX = {"Contact": "003", "Lead": "00Q", "Task": "00T", "Case": "500"}
#: Reference fields and the objects they may point at.
REFERENCES: dict[tuple[str, str], tuple[str, ...]] = {
    ("Task", "WhoId"): ("Contact", "Lead"),
    ("Case", "ContactId"): ("Contact",),
}

_DATA_PATH = re.compile(r"^/services/data/v(?P<major>\d+)\.(?P<minor>\d)(?P<rest>/.*)?$")


def sf_error(message: str, code: str, fields: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Salesforce's REST error body: a list of ``{"message", "errorCode", "fields"}``."""
    return [{"message": message, "errorCode": code, "fields": list(fields)}]


class SalesforceError(Exception):
    """Internal: answer ``status`` with Salesforce's error body."""

    def __init__(self, status: int, message: str, code: str, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.body = sf_error(message, code, fields)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


# --- SOQL subset ---------------------------------------------------------------------------------

_SOQL_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:\\.|[^'\\])*')|(?P<op>!=|=)|(?P<punct>[(),])"
    r"|(?P<number>\d+)|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)
_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}

Predicate = Callable[[Mapping[str, Any]], bool]


@dataclass
class SoqlQuery:
    fields: list[str]
    sobject: str
    where: Predicate
    order_by: str | None
    descending: bool
    limit: int | None


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _SOQL_TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise SalesforceError(400, f"unexpected token at position {position}", "MALFORMED_QUERY")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def _unescape(literal: str) -> str:
    body = literal[1:-1]
    out = []
    chars = iter(body)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        escaped = next(chars, "")
        if escaped not in _ESCAPES:
            raise SalesforceError(400, f"Invalid string literal {literal!r}: bad escape \\{escaped}", "MALFORMED_QUERY")
        out.append(_ESCAPES[escaped])
    return "".join(out)


class _SoqlParser:
    """Recursive descent over the token list; builds a predicate over a record's fields."""

    def __init__(self, text: str, known_fields: Callable[[str], frozenset[str]]) -> None:
        self.tokens = _tokens(text)
        self.position = 0
        self.known_fields = known_fields
        self.sobject = ""

    def parse(self) -> SoqlQuery:
        self._keyword("SELECT")
        fields = [self._word()]
        while self._accept("punct", ","):
            fields.append(self._word())
        self._keyword("FROM")
        self.sobject = self._word()
        known = self.known_fields(self.sobject)
        if not known:
            raise SalesforceError(400, f"sObject type '{self.sobject}' is not supported.", "INVALID_TYPE")
        for name in fields:
            self._check_field(name)
        where: Predicate = lambda record: True  # noqa: E731 - the no-WHERE case
        if self._accept_keyword("WHERE"):
            where = self._or()
        order_by, descending = None, False
        if self._accept_keyword("ORDER"):
            self._keyword("BY")
            order_by = self._check_field(self._word())
            if self._accept_keyword("DESC"):
                descending = True
            else:
                self._accept_keyword("ASC")
        limit = None
        if self._accept_keyword("LIMIT"):
            kind, value = self._next()
            if kind != "number":
                raise SalesforceError(400, "LIMIT needs a number", "MALFORMED_QUERY")
            limit = int(value)
        if self.position != len(self.tokens):
            raise SalesforceError(400, f"unexpected token: '{self.tokens[self.position][1]}'", "MALFORMED_QUERY")
        return SoqlQuery(fields, self.sobject, where, order_by, descending, limit)

    def _or(self) -> Predicate:
        terms = [self._and()]
        while self._accept_keyword("OR"):
            terms.append(self._and())
        return lambda record: any(term(record) for term in terms)

    def _and(self) -> Predicate:
        factors = [self._factor()]
        while self._accept_keyword("AND"):
            factors.append(self._factor())
        return lambda record: all(factor(record) for factor in factors)

    def _factor(self) -> Predicate:
        if self._accept("punct", "("):
            inner = self._or()
            self._expect("punct", ")")
            return inner
        field = self._check_field(self._word())
        if self._accept_keyword("IN"):
            self._expect("punct", "(")
            values = [self._value()]
            while self._accept("punct", ","):
                values.append(self._value())
            self._expect("punct", ")")
            return lambda record: any(_equal(record.get(field), value) for value in values)
        kind, op = self._next()
        if kind != "op":
            raise SalesforceError(400, f"expected a comparison after {field}", "MALFORMED_QUERY")
        value = self._value()
        if op == "=":
            return lambda record: _equal(record.get(field), value)
        return lambda record: not _equal(record.get(field), value)

    def _value(self) -> Any:
        kind, token = self._next()
        if kind == "string":
            return _unescape(token)
        if kind == "number":
            return int(token)
        if kind == "word" and token.lower() in ("true", "false"):
            return token.lower() == "true"
        if kind == "word" and token.lower() == "null":
            return None
        raise SalesforceError(400, f"unexpected value: '{token}'", "MALFORMED_QUERY")

    def _check_field(self, name: str) -> str:
        if name not in self.known_fields(self.sobject):
            raise SalesforceError(400, f"No such column '{name}' on entity '{self.sobject}'.", "INVALID_FIELD")
        return name

    def _next(self) -> tuple[str, str]:
        if self.position >= len(self.tokens):
            raise SalesforceError(400, "unexpected end of query", "MALFORMED_QUERY")
        token = self.tokens[self.position]
        self.position += 1
        return token

    def _word(self) -> str:
        kind, value = self._next()
        if kind != "word":
            raise SalesforceError(400, f"unexpected token: '{value}'", "MALFORMED_QUERY")
        return value

    def _keyword(self, word: str) -> None:
        if not self._accept_keyword(word):
            found = self.tokens[self.position][1] if self.position < len(self.tokens) else "end of query"
            raise SalesforceError(400, f"expected {word}, found '{found}'", "MALFORMED_QUERY")

    def _accept_keyword(self, word: str) -> bool:
        if self.position < len(self.tokens):
            kind, value = self.tokens[self.position]
            if kind == "word" and value.upper() == word:
                self.position += 1
                return True
        return False

    def _accept(self, kind: str, value: str) -> bool:
        if self.position < len(self.tokens) and self.tokens[self.position] == (kind, value):
            self.position += 1
            return True
        return False

    def _expect(self, kind: str, value: str) -> None:
        if not self._accept(kind, value):
            raise SalesforceError(400, f"expected '{value}'", "MALFORMED_QUERY")


def _equal(actual: Any, expected: Any) -> bool:
    """SOQL equality: text ignores case; null equals only a missing or null value."""
    if expected is None or actual is None:
        return actual is None and expected is None
    if isinstance(actual, str) and isinstance(expected, str):
        return actual.casefold() == expected.casefold()
    return bool(actual == expected)


# --- the in-memory org -------------------------------------------------------------------------------


class _Org:
    """Records by object type; every public method takes the lock."""

    def __init__(self, external_ids: Mapping[str, frozenset[str]], lead_statuses: Sequence[str]) -> None:
        self.lock = threading.RLock()
        self.picklists = {**PICKLISTS, ("Lead", "Status"): tuple(lead_statuses)}
        self.records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in FIELDS}
        self.external_ids = {name: frozenset(external_ids.get(name, ())) for name in FIELDS}
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)

    def fields(self, sobject: str) -> frozenset[str]:
        if sobject not in FIELDS:
            return frozenset()
        return FIELDS[sobject] | SYSTEM_FIELDS | self.external_ids[sobject]

    def new_id(self, sobject: str) -> str:
        return f"{ID_PREFIX[sobject]}5g000{next(self._ids):010d}"

    def validate(self, sobject: str, values: Mapping[str, Any]) -> None:
        known = FIELDS[sobject] | self.external_ids[sobject]
        for name, value in values.items():
            if name not in known:
                raise SalesforceError(400, f"No such column '{name}' on sobject of type {sobject}", "INVALID_FIELD")
            if value is not None and not isinstance(value, str | bool | int | float):
                raise SalesforceError(400, f"{name}: value not of required type", "JSON_PARSER_ERROR", [name])
            allowed = self.picklists.get((sobject, name))
            if allowed is not None and value not in allowed:
                raise SalesforceError(
                    400,
                    f"{name}: bad value for restricted picklist field: {value}",
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    [name],
                )
            targets = REFERENCES.get((sobject, name))
            if targets is not None and value is not None and not any(str(value) in self.records[t] for t in targets):
                raise SalesforceError(
                    400, f"{name}: id value of incorrect type: {value}", "FIELD_INTEGRITY_EXCEPTION", [name]
                )

    def create(self, sobject: str, values: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.validate(sobject, values)
            record_id = self.new_id(sobject)
            stamp = _now()
            record = {**DEFAULTS.get(sobject, {}), **values}
            record.update({"Id": record_id, "CreatedDate": stamp, "LastModifiedDate": stamp, "_seq": next(self._seq)})
            self.records[sobject][record_id] = record
            return copy.deepcopy(record)

    def update(self, sobject: str, record_id: str, values: Mapping[str, Any]) -> dict[str, Any] | None:
        with self.lock:
            record = self.records[sobject].get(record_id)
            if record is None:
                return None
            self.validate(sobject, values)
            record.update(values)
            record["LastModifiedDate"] = _now()
            record["_seq"] = next(self._seq)
            return copy.deepcopy(record)

    def by_external_id(self, sobject: str, field: str, value: str) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(r) for r in self.records[sobject].values() if r.get(field) == value]

    def get(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        with self.lock:
            record = self.records.get(sobject, {}).get(record_id)
            return copy.deepcopy(record) if record else None

    def all(self, sobject: str) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(r) for r in self.records[sobject].values()]

    def query(self, soql: str) -> list[dict[str, Any]]:
        with self.lock:
            parsed = _SoqlParser(soql, self.fields).parse()
            hits = [r for r in self.records[parsed.sobject].values() if parsed.where(r)]
            if parsed.order_by is not None:
                key = parsed.order_by
                hits.sort(key=lambda r: (str(r.get(key) or ""), r["_seq"]), reverse=parsed.descending)
            if parsed.limit is not None:
                hits = hits[: parsed.limit]
            return [
                {name: copy.deepcopy(r.get(name)) for name in parsed.fields} | {"_type": parsed.sobject} for r in hits
            ]

    def clear(self) -> None:
        with self.lock:
            for records in self.records.values():
                records.clear()


def _public(sobject: str, record: Mapping[str, Any], base: str) -> dict[str, Any]:
    """A record as the REST API returns it: ``attributes`` first, no internal keys."""
    fields = {k: v for k, v in record.items() if not k.startswith("_")}
    return {"attributes": {"type": sobject, "url": f"{base}/sobjects/{sobject}/{record['Id']}"}, **fields}


# --- the server ----------------------------------------------------------------------------------------


class FakeSalesforce(FakeHttpService):
    """The fake Salesforce org: start it, seed Contacts/Leads, point ``SalesforceCrm`` at ``url``."""

    server_name = "FakeSalesforce/1.0"
    thread_name = "fake-salesforce"
    rate_limit_status = 403

    def __init__(
        self,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        external_ids: Mapping[str, Sequence[str]] | None = None,
        lead_statuses: Sequence[str] = LEAD_STATUSES,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        ids = (
            external_ids
            if external_ids is not None
            else {"Task": [DEFAULT_EXTERNAL_ID_FIELD], "Case": [DEFAULT_EXTERNAL_ID_FIELD]}
        )
        self._org = _Org({name: frozenset(fields) for name, fields in ids.items()}, lead_statuses)
        self._client_id = client_id
        self._client_secret = client_secret
        self._tokens: set[str] = set()

    # --- credentials -----------------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def client_secret(self) -> str:
        with self._lock:
            return self._client_secret

    def rotate_client_secret(self, new: str, *, revoke_tokens: bool = True) -> None:
        """Make ``new`` the consumer secret; by default the sessions issued so far end too."""
        with self._lock:
            self._client_secret = new
            if revoke_tokens:
                self._tokens.clear()

    def revoke_tokens(self) -> None:
        """End every session (as a timeout or an admin revoking them): the next call gets 401."""
        with self._lock:
            self._tokens.clear()

    # --- data --------------------------------------------------------------------------------------

    def add_record(self, sobject: str, fields: Mapping[str, Any]) -> str:
        """Seed a record of any supported object; returns its Id."""
        if sobject not in FIELDS:
            raise ValueError(f"unsupported sobject {sobject!r}; use one of {', '.join(FIELDS)}")
        try:
            return str(self._org.create(sobject, fields)["Id"])
        except SalesforceError as exc:
            raise ValueError(str(exc)) from None

    def add_contact(self, phone: str | None = None, email: str | None = None, **fields: Any) -> str:
        values = {"LastName": "Doe", **fields}
        values |= {k: v for k, v in (("Phone", phone), ("Email", email)) if v is not None}
        return self.add_record("Contact", values)

    def add_lead(self, phone: str | None = None, email: str | None = None, **fields: Any) -> str:
        values = {"LastName": "Doe", "Company": "Acme", **fields}
        values |= {k: v for k, v in (("Phone", phone), ("Email", email)) if v is not None}
        return self.add_record("Lead", values)

    def records(self, sobject: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if not k.startswith("_")} for r in self._org.all(sobject)]

    def record(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        found = self._org.get(sobject, record_id)
        return {k: v for k, v in found.items() if not k.startswith("_")} if found else None

    def tasks_for(self, conversation_id: str, field: str = DEFAULT_EXTERNAL_ID_FIELD) -> list[dict[str, Any]]:
        return [r for r in self.records("Task") if r.get(field) == conversation_id]

    def cases_for(self, conversation_id: str, field: str = DEFAULT_EXTERNAL_ID_FIELD) -> list[dict[str, Any]]:
        return [r for r in self.records("Case") if r.get(field) == conversation_id]

    @property
    def token_requests(self) -> int:
        return len(self.requests_to("POST", TOKEN_PATH + "$"))

    # --- the service hooks -------------------------------------------------------------------------

    def _state_data(self) -> dict[str, Any]:
        return {name.lower() + "s": self.records(name) for name in FIELDS}

    def _reset_data(self) -> None:
        self._org.clear()

    def _loggable_body(self, request: Request) -> Any:
        if request.path == TOKEN_PATH:
            form = {k: v[0] for k, v in parse_qs(request.raw.decode("utf-8", "replace")).items()}
            return {k: ("<redacted>" if k == "client_secret" else v) for k, v in form.items()}
        return super()._loggable_body(request)

    def _authorized(self, request: Request) -> bool:
        if request.path == TOKEN_PATH:
            return True  # the token endpoint checks the client credentials in its body
        authorization = request.header("Authorization") or ""
        if not authorization.startswith("Bearer "):
            return False
        with self._lock:
            return authorization[len("Bearer ") :].strip() in self._tokens

    def _unauthorized(self, request: Request) -> Answer:
        return Answer(401, sf_error("Session expired or invalid", "INVALID_SESSION_ID"))

    def _rate_limited(self, status: int | None, retry_after: str | None, body: Any) -> Answer:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        default = sf_error("TotalRequests Limit exceeded.", "REQUEST_LIMIT_EXCEEDED")
        return Answer(status or self.rate_limit_status, body if body is not None else default, headers)

    def _fault_body(self, fault: Fault) -> Any:
        return sf_error(f"injected fault {fault.id}: HTTP {fault.status or 500}", "UNKNOWN_EXCEPTION")

    def _route(self, request: Request) -> Answer:
        if request.path == TOKEN_PATH:
            return self._token(request)
        match = _DATA_PATH.match(request.path)
        if match is None:
            return Answer(404, sf_error("The requested resource does not exist", "NOT_FOUND"))
        version = (int(match["major"]), int(match["minor"]))
        base = f"/services/data/v{match['major']}.{match['minor']}"
        rest = [unquote(part) for part in (match["rest"] or "").strip("/").split("/") if part]
        try:
            if rest == ["query"] and request.method == "GET":
                return self._query(request, base)
            if len(rest) >= 2 and rest[0] == "sobjects":
                return self._sobject(request, rest[1], rest[2:], version, base)
        except SalesforceError as exc:
            return Answer(exc.status, exc.body)
        return Answer(404, sf_error("The requested resource does not exist", "NOT_FOUND"))

    def _token(self, request: Request) -> Answer:
        form = {k: v[0] for k, v in parse_qs(request.raw.decode("utf-8", "replace")).items()}
        if request.method != "POST" or form.get("grant_type") != "client_credentials":
            return Answer(400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"})
        with self._lock:
            valid = form.get("client_id") == self._client_id and form.get("client_secret") == self._client_secret
            if not valid:
                return Answer(400, {"error": "invalid_client", "error_description": "invalid client credentials"})
            token = f"00D5g000000FAKE!{secrets.token_urlsafe(24)}"
            self._tokens.add(token)
        org, user = "00D5g000000FAKEEAA", "0055g000000FAKEAAA"
        return Answer(
            200,
            {
                "access_token": token,
                "signature": secrets.token_urlsafe(32),
                "scope": "api",
                "instance_url": self.url,
                "id": f"{self.url}/id/{org}/{user}",
                "token_type": "Bearer",
                "issued_at": str(int(datetime.now(UTC).timestamp() * 1000)),
            },
        )

    def _query(self, request: Request, base: str) -> Answer:
        soql = request.param("q")
        if not soql:
            raise SalesforceError(400, "A query string parameter 'q' is required", "MALFORMED_QUERY")
        rows = self._org.query(soql)
        records = []
        for row in rows:
            sobject = row.pop("_type")
            attributes = {"type": sobject, "url": f"{base}/sobjects/{sobject}/{row.get('Id', '')}"}
            records.append({"attributes": attributes, **row})
        return Answer(200, {"totalSize": len(records), "done": True, "records": records})

    def _sobject(self, request: Request, sobject: str, rest: list[str], version: tuple[int, int], base: str) -> Answer:
        if sobject not in FIELDS:
            raise SalesforceError(404, f"The requested resource does not exist: {sobject}", "NOT_FOUND")
        if len(rest) == 1:  # /sobjects/<Object>/<Id>
            return self._by_id(request, sobject, rest[0], base)
        if len(rest) == 2:  # /sobjects/<Object>/<ExternalIdField>/<value>
            return self._by_external_id(request, sobject, rest[0], rest[1], version, base)
        raise SalesforceError(404, "The requested resource does not exist", "NOT_FOUND")

    def _by_id(self, request: Request, sobject: str, record_id: str, base: str) -> Answer:
        if request.method == "GET":
            found = self._org.get(sobject, record_id)
            if found is None:
                raise SalesforceError(404, "The requested resource does not exist", "NOT_FOUND")
            return Answer(200, _public(sobject, found, base))
        if request.method == "PATCH":
            updated = self._org.update(sobject, record_id, _fields_body(request))
            if updated is None:
                raise SalesforceError(404, "The requested resource does not exist", "NOT_FOUND")
            return Answer(204, None)
        raise SalesforceError(
            405, f"HTTP Method '{request.method}' not allowed. Allowed are GET,PATCH", "METHOD_NOT_ALLOWED"
        )

    def _by_external_id(
        self, request: Request, sobject: str, field: str, value: str, version: tuple[int, int], base: str
    ) -> Answer:
        if field not in self._org.external_ids[sobject]:
            raise SalesforceError(
                404, f"Provided external ID field does not exist or is not accessible: {field}", "NOT_FOUND"
            )
        if request.method == "GET":
            matches = self._org.by_external_id(sobject, field, value)
            if not matches:
                raise SalesforceError(404, "The requested resource does not exist", "NOT_FOUND")
            return Answer(200, _public(sobject, matches[0], base))
        if request.method != "PATCH":
            raise SalesforceError(
                405, f"HTTP Method '{request.method}' not allowed. Allowed are GET,PATCH", "METHOD_NOT_ALLOWED"
            )
        values = _fields_body(request)
        if field in values and values[field] != value:
            raise SalesforceError(400, f"{field}: the value in the body differs from the URL", "INVALID_FIELD", [field])
        with self._org.lock:
            matches = self._org.by_external_id(sobject, field, value)
            if len(matches) > 1:
                return Answer(300, [f"{base}/sobjects/{sobject}/{m['Id']}" for m in matches])
            if not matches:
                created = self._org.create(sobject, {**values, field: value})
                body: dict[str, Any] = {"id": created["Id"], "success": True, "errors": []}
                if version >= UPSERT_BODY_SINCE:
                    body["created"] = True
                return Answer(201, body, {"Location": f"{base}/sobjects/{sobject}/{created['Id']}"})
            updated = self._org.update(sobject, matches[0]["Id"], values)
            assert updated is not None
        if version >= UPSERT_BODY_SINCE:
            return Answer(200, {"id": updated["Id"], "success": True, "errors": [], "created": False})
        return Answer(204, None)

    def _admin_route(self, method: str, route: str, body: Any) -> Answer | None:
        if route == "records" and method == "POST":
            if not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
                raise ValueError('send {"sobject": "Contact", "fields": {...}}')
            return Answer(201, {"id": self.add_record(str(body.get("sobject")), body["fields"])})
        if route == "credentials" and method == "POST":
            if (
                not isinstance(body, dict)
                or not isinstance(body.get("client_secret"), str)
                or not body["client_secret"]
            ):
                raise ValueError('send {"client_secret": "<new secret>", "revoke_tokens": true}')
            self.rotate_client_secret(body["client_secret"], revoke_tokens=bool(body.get("revoke_tokens", True)))
            return Answer(200, {"rotated": True})
        if route == "revoke" and method == "POST":
            self.revoke_tokens()
            return Answer(200, {"revoked": True})
        return None


def _fields_body(request: Request) -> dict[str, Any]:
    try:
        body = request.json()
    except ValueError:
        raise SalesforceError(400, "The request body is not valid JSON", "JSON_PARSER_ERROR") from None
    if not isinstance(body, dict):
        raise SalesforceError(400, "The request body must be a JSON object of fields", "JSON_PARSER_ERROR")
    return body


class FakeSalesforceAdmin(FakeAdmin):
    """Drive a running fake Salesforce from another process through ``/__admin/``."""

    def add_record(self, sobject: str, fields: Mapping[str, Any]) -> str:
        return str(self._call("POST", "records", {"sobject": sobject, "fields": dict(fields)})["id"])

    def rotate_client_secret(self, new: str, *, revoke_tokens: bool = True) -> None:
        self._call("POST", "credentials", {"client_secret": new, "revoke_tokens": revoke_tokens})

    def revoke_tokens(self) -> None:
        self._call("POST", "revoke")
