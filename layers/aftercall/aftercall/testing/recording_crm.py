"""The CRM side of the kit: a real adapter whose requests are recorded and answered in-process."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
from requests.adapters import BaseAdapter

from aftercall.credentials import SecretCredentials
from aftercall.crm.base import Crm
from aftercall.settings import CRM_PROVIDERS
from aftercall.testing.masking import mask

_HIDDEN_HEADERS = frozenset({"authorization", "x-aftercall-signature", "x-aftercall-timestamp"})


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request an adapter sent: ``path`` without the host, ``body`` decoded (JSON or form)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    status: int

    def to_json(self, masked: bool = True) -> dict[str, Any]:
        data = {"method": self.method, "path": self.path, "query": self.query, "body": self.body}
        if masked:  # headers carry no personal data (credentials and signatures are never recorded)
            data = mask(data)
        return {**data, "headers": self.headers, "status": self.status}


Responder = Callable[[str, str, dict[str, str], Any], tuple[int, Any]]


class _RecordingTransport(BaseAdapter):
    """A requests transport that records each request and answers it through ``responder``."""

    def __init__(self, responder: Responder, record: Callable[[RecordedRequest], None]) -> None:
        super().__init__()
        self._responder = responder
        self._record = record

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        parts = urlsplit(request.url or "")
        query = dict(parse_qsl(parts.query))
        raw = request.body.encode() if isinstance(request.body, str) else (request.body or b"")
        content_type = request.headers.get("Content-Type", "")
        body: Any
        if not raw:
            body = None
        elif "x-www-form-urlencoded" in content_type:
            body = dict(parse_qsl(raw.decode()))
        else:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        method = (request.method or "GET").upper()
        status, answer = self._responder(method, parts.path, query, body)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HIDDEN_HEADERS}
        for drop in ("User-Agent", "Accept-Encoding", "Connection", "Content-Length", "Accept"):
            headers.pop(drop, None)
        self._record(RecordedRequest(method, parts.path, query, body, headers, status))
        response = requests.Response()
        response.status_code = status
        response.url = request.url or ""
        response.request = request
        response._content = b"" if answer is None else json.dumps(answer).encode()
        response.headers["Content-Type"] = "application/json"
        return response

    def close(self) -> None:
        """Nothing to release: no connection was opened."""


class _StaticCredentials(SecretCredentials):
    """Credentials that never touch Secrets Manager."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__("aftercall.testing", tuple(values))
        self._values = dict(values)

    def get(self, force: bool = False) -> dict[str, str]:
        return dict(self._values)


class RecordingCrm:
    """A real CRM adapter whose requests are recorded and answered like the CRM would answer them.

    ``known_customer=False`` makes every customer lookup come back empty, so the adapter raises
    what it raises for a caller the CRM does not know (``UnknownContactError``).
    """

    def __init__(self, provider: str = "hubspot", *, known_customer: bool = True) -> None:
        if provider not in CRM_PROVIDERS:
            raise ValueError(f"crm must be one of {', '.join(CRM_PROVIDERS)}, not {provider!r}")
        self.provider = provider
        self.known_customer = known_customer
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._ids = iter(range(1001, 1_000_000))
        transport = _RecordingTransport(getattr(self, f"_{provider}"), self._append)
        self.crm: Crm = _adapter(provider, transport)

    def _append(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def _hubspot(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if method == "POST" and path == "/crm/v3/objects/contacts/search":
            results = [{"id": "501", "properties": {}}] if self.known_customer else []
            return 200, {"total": len(results), "results": results}
        if method == "POST" and path.endswith("/search"):
            return 200, {"total": 0, "results": []}
        if method == "POST" and path.startswith("/crm/v3/objects/"):
            return 201, {"id": str(self._next_id()), "properties": (body or {}).get("properties", {})}
        if method == "PATCH" and path.startswith("/crm/v3/objects/contacts/"):
            return 200, {"id": path.rsplit("/", 1)[1], "properties": (body or {}).get("properties", {})}
        return _no_answer(method, path)

    def _salesforce(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if method == "POST" and path == "/services/oauth2/token":
            return 200, {"access_token": "recorded-token", "instance_url": "https://example.my.salesforce.com"}
        if method == "GET" and path.endswith("/query"):
            sobject = "Lead" if " FROM Lead " in f" {query.get('q', '')} " else "Contact"
            records = [{"Id": ("00Q" if sobject == "Lead" else "003") + "000000000501"}] if self.known_customer else []
            return 200, {"totalSize": len(records), "done": True, "records": records}
        below = path.partition("/sobjects/")[2].split("/")
        if method == "PATCH" and len(below) == 2:  # a field update on one record: 204, no body
            return 204, None
        if method == "PATCH" and len(below) == 3:  # an upsert on the external id: created
            prefix = "500" if below[0] == "Case" else "00T"
            return 201, {"id": f"{prefix}{self._next_id():012d}", "success": True, "created": True, "errors": []}
        return _no_answer(method, path)

    def _zendesk(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/api/v2/users/search":
            value = query.get("query", "")
            user = {"id": 9001, "phone": value, "email": None} if "@" not in value else {"id": 9001, "email": value}
            return 200, {"users": [user] if self.known_customer else [], "count": int(self.known_customer)}
        if method == "GET" and path == "/api/v2/tickets":
            return 200, {"tickets": [], "count": 0}
        if method == "POST" and path == "/api/v2/tickets":
            return 201, {"ticket": {"id": self._next_id(), **((body or {}).get("ticket") or {})}}
        if method == "PUT" and path.startswith("/api/v2/users/"):
            fields = ((body or {}).get("user") or {}).get("user_fields") or {}
            return 200, {"user": {"id": int(path.rsplit("/", 1)[1]), "user_fields": fields}}
        return _no_answer(method, path)

    def _webhook(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if method == "POST":
            if not self.known_customer:
                return 404, {"error": "unknown_contact"}
            return 200, {"id": f"received-{self._next_id()}"}
        return _no_answer(method, path)


def _no_answer(method: str, path: str) -> tuple[int, Any]:
    return 404, {"message": f"aftercall.testing has no recorded answer for {method} {path}"}


def _adapter(provider: str, transport: BaseAdapter) -> Crm:
    """The real adapter for ``provider``, sending through ``transport``."""
    if provider == "hubspot":
        from aftercall.crm.hubspot import DEFAULT_BASE_URL, HubSpotCrm

        return HubSpotCrm(_StaticCredentials({"access_token": "recorded"}), DEFAULT_BASE_URL, transport=transport)
    if provider == "salesforce":
        from aftercall.crm.salesforce import SalesforceCrm

        secret = {
            "client_id": "recorded",
            "client_secret": "recorded",
            "instance_url": "https://example.my.salesforce.com",
        }
        return SalesforceCrm(_StaticCredentials(secret), transport=transport)
    if provider == "zendesk":
        from aftercall.crm.zendesk import ZendeskCrm

        secret = {"subdomain": "example", "email": "agent@example.com", "api_token": "recorded"}
        return ZendeskCrm(_StaticCredentials(secret), transport=transport)
    from aftercall.crm.webhook import WebhookCrm

    secret = {"url": "https://hooks.example.com/aftercall", "signing_secret": "recorded"}
    return WebhookCrm(_StaticCredentials(secret), transport=transport)
