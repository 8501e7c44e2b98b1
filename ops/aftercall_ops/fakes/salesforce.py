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

import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

from aftercall_ops.fakes.http import Answer, FakeAdmin, FakeHttpService, Fault, Request
from aftercall_ops.fakes.salesforce_org import (
    DEFAULT_CALLER_ID_FIELD,
    DEFAULT_EXTERNAL_ID_FIELD,
    FIELDS,
    INDEX_LAG_SECONDS,
    LEAD_STATUSES,
    _Org,
    _public,
)
from aftercall_ops.fakes.salesforce_soql import SalesforceError, sf_error

DEFAULT_CLIENT_ID = "fake-salesforce-client-id"
DEFAULT_CLIENT_SECRET = "fake-salesforce-client-secret"  # noqa: S105 - the fake's own test secret
TOKEN_PATH = "/services/oauth2/token"  # noqa: S105 - a URL path
#: API 46.0 made an upsert that updates answer 200 with a body; before, 204 without one.
UPSERT_BODY_SINCE = (46, 0)
#: "API Requests, Maximum per 24-hour period: Developer Edition 15,000"; beyond it Salesforce answers
#: 403 REQUEST_LIMIT_EXCEEDED "TotalRequests Limit exceeded." and reports the use in every answer's
#: ``Sforce-Limit-Info: api-usage=<used>/<limit>`` header.
DAILY_API_REQUESTS = 15_000
_DATA_PATH = re.compile(r"^/services/data/v(?P<major>\d+)\.(?P<minor>\d)(?P<rest>/.*)?$")

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
        index_lag_seconds: float = INDEX_LAG_SECONDS,
        daily_api_requests: int | None = DAILY_API_REQUESTS,
        **options: Any,
    ) -> None:
        """The search index lag and the daily API limit are on by default (``0``/``None`` turns one off)."""
        super().__init__(**options)
        ids = (
            external_ids
            if external_ids is not None
            else {
                "Task": [DEFAULT_EXTERNAL_ID_FIELD],
                "Case": [DEFAULT_EXTERNAL_ID_FIELD],
                "Lead": [DEFAULT_CALLER_ID_FIELD],
                "Contact": [DEFAULT_CALLER_ID_FIELD],
            }
        )
        self.index_lag_seconds = index_lag_seconds
        self.daily_api_requests = daily_api_requests
        self._api_requests = 0
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
        with self._lock:
            self._api_requests += 1
            used, limit = self._api_requests, self.daily_api_requests
        if limit is not None and used > limit:
            return Answer(403, sf_error("TotalRequests Limit exceeded.", "REQUEST_LIMIT_EXCEEDED"))
        answer = self._data(request)
        if limit is not None:
            answer.headers["Sforce-Limit-Info"] = f"api-usage={used}/{limit}"
        return answer

    def _data(self, request: Request) -> Answer:
        match = _DATA_PATH.match(request.path)
        if match is None:
            return Answer(404, sf_error("The requested resource does not exist", "NOT_FOUND"))
        version = (int(match["major"]), int(match["minor"]))
        base = f"/services/data/v{match['major']}.{match['minor']}"
        rest = [unquote(part) for part in (match["rest"] or "").strip("/").split("/") if part]
        try:
            if rest == ["query"] and request.method == "GET":
                return self._query(request, base)
            if rest == ["search"] and request.method == "GET":
                return self._search(request, base)
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

    def _search(self, request: Request, base: str) -> Answer:
        """``GET /search/?q=<SOSL>``: ``{"searchRecords": [...]}`` from the search index (it lags writes)."""
        sosl = request.param("q")
        if not sosl:
            raise SalesforceError(400, "A search string parameter 'q' is required", "MALFORMED_SEARCH")
        records = []
        for row in self._org.search(sosl):
            sobject = row.pop("_type")
            attributes = {"type": sobject, "url": f"{base}/sobjects/{sobject}/{row.get('Id', '')}"}
            records.append({"attributes": attributes, **row})
        return Answer(200, {"searchRecords": records})

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
                created = self._org.create(sobject, {**values, field: value}, index_lag=self.index_lag_seconds)
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
