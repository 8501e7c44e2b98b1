"""A fake Zendesk Support: the API subset ``aftercall.crm.zendesk`` uses, on loopback.

Why it exists: the Zendesk adapter relies on Zendesk's ``Idempotency-Key`` for tickets, so the
fake implements it the way Zendesk documents it, and fails the ways Zendesk fails:

* Tickets (:mod:`aftercall_ops.fakes.zendesk_tickets`): ``POST /api/v2/tickets`` with
  ``Idempotency-Key`` (up to 255 characters, kept two hours): a repeat with the same body replays
  the first answer with ``x-idempotency-lookup: hit`` (the first answers ``miss``) and creates
  nothing; the same key with a different body answers 400 ``IdempotentRequestError``. Only
  successful creates are remembered, so a refused one can be corrected and sent again. Validation
  answers 422 ``RecordInvalid``. ``GET /api/v2/tickets?external_id=``, ``GET /api/v2/tickets/<id>``,
  ``GET /api/v2/tickets/<id>/comments``.
* End users (:mod:`aftercall_ops.fakes.zendesk_users`): ``GET /api/v2/users/search?query=``
  (part of a name, email or phone), ``GET /api/v2/search.json?query=type:user phone:*<digits>``,
  ``POST /api/v2/users/create_or_update``, ``PUT /api/v2/users/<id>`` (``user_fields`` for fields
  that do not exist are dropped); phones stored as typed, search lagging writes.
* The account's per-minute request limit (``X-Rate-Limit`` headers, 429 with ``Retry-After``).
* API token auth: HTTP Basic ``<email>/token:<api token>``; 401 ``Couldn't authenticate you``.

Faults are those of :mod:`aftercall_ops.fakes.http` (a ``rate_limit`` fault answers 429 with
``Retry-After``). Admin extras: ``POST /__admin/users``, ``POST /__admin/tokens``
(``{"api_token"}``), ``POST /__admin/idempotency/expire`` (the two hours have passed).
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from aftercall_ops.fakes.http import Answer, FakeAdmin, FakeHttpService, Fault, Request
from aftercall_ops.fakes.zendesk_tickets import IDEMPOTENCY_TTL_SECONDS, ZendeskTickets, zendesk_error
from aftercall_ops.fakes.zendesk_users import INDEX_LAG_SECONDS, USER_UPDATES_PER_MINUTE, UserError, Users

DEFAULT_EMAIL = "agent@example.com"
DEFAULT_API_TOKEN = "fake-zendesk-api-token"  # noqa: S105 - the fake's own test token
DEFAULT_USER_FIELDS = ("aftercall_disposition",)
#: "Support and Help Center API requests per minute: Team 200, Growth 400, Professional 400,
#: Enterprise 700, Enterprise Plus 2500" (Zendesk Suite plan limits); the fake is a Team account.
REQUESTS_PER_MINUTE = 200

_TICKET = re.compile(r"^/api/v2/tickets/(?P<id>\d+)(?P<comments>/comments)?(?:\.json)?$")
_USER = re.compile(r"^/api/v2/users/(?P<id>\d+)(?:\.json)?$")


class FakeZendesk(FakeHttpService):
    """The fake Zendesk account: start it, seed users, point ``ZendeskCrm`` at ``url``."""

    server_name = "FakeZendesk/1.0"
    thread_name = "fake-zendesk"

    def __init__(
        self,
        *,
        email: str = DEFAULT_EMAIL,
        api_token: str = DEFAULT_API_TOKEN,
        user_fields: Sequence[str] = DEFAULT_USER_FIELDS,
        idempotency_ttl: float = IDEMPOTENCY_TTL_SECONDS,
        requests_per_minute: int | None = REQUESTS_PER_MINUTE,
        index_lag_seconds: float = INDEX_LAG_SECONDS,
        user_updates_per_minute: int | None = USER_UPDATES_PER_MINUTE,
        **options: Any,
    ) -> None:
        """Zendesk's limits and search index lag are on by default; ``None``/``0`` turns one off."""
        super().__init__(**options)
        self.requests_per_minute = requests_per_minute
        self._minute: deque[float] = deque()
        self._data_lock = threading.RLock()
        self._email = email
        self._api_tokens = {api_token}
        self._api_token = api_token
        self._user_fields = set(user_fields)
        self._people = Users(
            self._user_fields, index_lag_seconds=index_lag_seconds, updates_per_minute=user_updates_per_minute
        )
        self._tickets = ZendeskTickets(self._people, idempotency_ttl=idempotency_ttl)

    # --- credentials -----------------------------------------------------------------------------

    @property
    def email(self) -> str:
        return self._email

    @property
    def api_token(self) -> str:
        with self._lock:
            return self._api_token

    def rotate_api_token(self, new: str, *, keep_old: bool = False) -> None:
        """Make ``new`` the valid API token; the old one stops working unless ``keep_old``."""
        with self._lock:
            self._api_tokens = {*self._api_tokens, new} if keep_old else {new}
            self._api_token = new

    # --- data --------------------------------------------------------------------------------------

    def add_user(
        self,
        phone: str | None = None,
        email: str | None = None,
        name: str = "Jane Doe",
        user_fields: Mapping[str, Any] | None = None,
    ) -> int:
        """Seed an end user (searchable at once, as if created long ago); returns its id."""
        values = {"phone": phone, "email": email, "name": name, "user_fields": user_fields}
        return int(self._people.add(values)["id"])

    def define_user_field(self, key: str) -> None:
        with self._data_lock:
            self._user_fields.add(key)

    def expire_idempotency_keys(self) -> None:
        """As if two hours had passed: every key is forgotten."""
        self._tickets.expire_idempotency_keys()

    @property
    def idempotent_replays(self) -> int:
        """How many creates were answered by replaying a remembered key's first answer."""
        return self._tickets.idempotent_replays

    def user(self, user_id: int) -> dict[str, Any] | None:
        return self._people.get(user_id)

    @property
    def users(self) -> list[dict[str, Any]]:
        return self._people.all()

    @property
    def tickets(self) -> list[dict[str, Any]]:
        return self._tickets.all()

    def comments(self, ticket_id: int | str) -> list[dict[str, Any]]:
        return self._tickets.comments(ticket_id)

    def tickets_for(self, conversation_id: str) -> list[dict[str, Any]]:
        """Tickets whose external id names the conversation (``aftercall:<id>:<action>``)."""
        prefix = f"aftercall:{conversation_id}:"
        return [t for t in self.tickets if str(t.get("external_id") or "").startswith(prefix)]

    # --- the service hooks -------------------------------------------------------------------------

    def _state_data(self) -> dict[str, Any]:
        keys = self._tickets.idempotency_keys()
        return {"users": self.users, "tickets": self.tickets, "idempotency_keys": keys}

    def _reset_data(self) -> None:
        self._people.clear()
        self._tickets.clear()

    def _authorized(self, request: Request) -> bool:
        authorization = request.header("Authorization") or ""
        if not authorization.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(authorization[len("Basic ") :], validate=True).decode()
        except ValueError:
            return False
        user, _, token = decoded.partition(":")
        with self._lock:
            return user == f"{self._email}/token" and token in self._api_tokens

    def _unauthorized(self, request: Request) -> Answer:
        return Answer(401, {"error": "Couldn't authenticate you"})

    def _rate_limited(self, status: int | None, retry_after: str | None, body: Any) -> Answer:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        default = zendesk_error("APIRateLimitExceeded", "Number of allowed API requests per minute exceeded")
        return Answer(status or 429, body if body is not None else default, headers)

    def _fault_body(self, fault: Fault) -> Any:
        return zendesk_error("InternalError", f"injected fault {fault.id}: HTTP {fault.status or 500}")

    def _route(self, request: Request) -> Answer:
        """The account's per-minute limit first ("X-Rate-Limit: 700 / X-Rate-Limit-Remaining: 699";
        beyond it "429 Too Many Requests ... a Retry-After header")."""
        limit = self.requests_per_minute
        if not limit:
            return self._api(request)
        now = time.monotonic()
        with self._data_lock:
            while self._minute and self._minute[0] <= now - 60.0:
                self._minute.popleft()
            if len(self._minute) >= limit:
                wait = max(1, int(self._minute[0] + 60.0 - now) + 1)
                headers = {"Retry-After": str(wait), "X-Rate-Limit": str(limit), "X-Rate-Limit-Remaining": "0"}
                body = zendesk_error("APIRateLimitExceeded", "Number of allowed API requests per minute exceeded")
                return Answer(429, body, headers)
            self._minute.append(now)
            remaining = limit - len(self._minute)
        answer = self._api(request)
        answer.headers.update({"X-Rate-Limit": str(limit), "X-Rate-Limit-Remaining": str(remaining)})
        return answer

    def _api(self, request: Request) -> Answer:
        path = request.path.removesuffix(".json")
        method = request.method
        try:
            body = request.json()
        except ValueError:
            return Answer(400, zendesk_error("InvalidJSON", "the body is not JSON"))
        if path == "/api/v2/tickets":
            if method == "POST":
                return self._tickets.create(request, body)
            if method == "GET":
                return self._tickets.listing(request.param("external_id"))
        if (match := _TICKET.match(path)) and method == "GET":
            return self._tickets.get(int(match["id"]), comments=bool(match["comments"]))
        try:
            if path == "/api/v2/users/search" and method == "GET":
                return Answer(200, self._people.users_search(request.param("query") or ""))
            if path == "/api/v2/search" and method == "GET":
                return Answer(200, self._people.search(request.param("query") or ""))
            if path == "/api/v2/users/create_or_update" and method == "POST":
                status, user = self._people.create_or_update(body)
                return Answer(status, {"user": user})
            if (match := _USER.match(path)) and method == "PUT":
                return self._update_user(int(match["id"]), body)
        except UserError as exc:
            return Answer(exc.status, exc.body, exc.headers)
        return Answer(404, zendesk_error("InvalidEndpoint", "Not found"))

    # --- users -------------------------------------------------------------------------------------

    def _update_user(self, user_id: int, body: Any) -> Answer:
        changes = body.get("user") if isinstance(body, dict) else None
        if not isinstance(changes, dict):
            return Answer(400, zendesk_error("InvalidValue", 'send {"user": {...}}'))
        return Answer(200, {"user": self._people.update(user_id, changes)})

    def _admin_route(self, method: str, route: str, body: Any) -> Answer | None:
        if route == "users" and method == "POST":
            if not isinstance(body, dict):
                raise ValueError('send {"phone", "email", "name", "user_fields"}')
            user_id = self.add_user(
                body.get("phone"), body.get("email"), body.get("name") or "Jane Doe", body.get("user_fields")
            )
            return Answer(201, {"id": user_id})
        if route == "tokens" and method == "POST":
            if not isinstance(body, dict) or not isinstance(body.get("api_token"), str) or not body["api_token"]:
                raise ValueError('send {"api_token": "<new token>", "keep_old": false}')
            self.rotate_api_token(body["api_token"], keep_old=bool(body.get("keep_old")))
            return Answer(200, {"rotated": True})
        if route == "idempotency/expire" and method == "POST":
            self.expire_idempotency_keys()
            return Answer(200, {"expired": True})
        return None


class FakeZendeskAdmin(FakeAdmin):
    """Drive a running fake Zendesk from another process through ``/__admin/``."""

    def add_user(self, phone: str | None = None, email: str | None = None, name: str = "Jane Doe") -> int:
        return int(self._call("POST", "users", {"phone": phone, "email": email, "name": name})["id"])

    def rotate_api_token(self, token: str, *, keep_old: bool = False) -> None:
        self._call("POST", "tokens", {"api_token": token, "keep_old": keep_old})

    def expire_idempotency_keys(self) -> None:
        self._call("POST", "idempotency/expire")
