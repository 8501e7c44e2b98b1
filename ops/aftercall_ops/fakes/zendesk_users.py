"""The fake Zendesk's end users: stored as given, searched as Zendesk searches, created or updated.

What Zendesk documents and this fake keeps:

* Phones are kept as typed (``+1 513.555.7611``, ``(513) 555-7611``). ``GET /api/v2/search.json``
  with ``query=role:end-user phone:{number}``: "The number should not contain any non-numeric
  characters like spaces, dashes, or parentheses. The '+' sign preceding a country code should
  not be included either. To specify a phone number in different formats, add a leading *
  (asterisk) to the number." So ``phone:*5135557611`` matches every format above (the digits end
  with the number); ``phone:5135557611`` only a number whose digits are exactly those.
* Search reads an index that lags writes: "It can take up to a few minutes for new tickets,
  users, and other resources to be indexed for search" (:data:`INDEX_LAG_SECONDS`).
* ``POST /api/v2/users/create_or_update``: "Creates a user if the user does not already exist, or
  updates an existing user identified by e-mail address or external ID" (201 created, 200
  updated); ``name`` is required for a new user, a malformed email is refused (422).
* "Update User: 5 requests per minute per user" (429 "You have exceeded the rate limit for
  updating a single unique user", with ``Retry-After``).
"""

from __future__ import annotations

import copy
import itertools
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

INDEX_LAG_SECONDS = 60.0
USER_UPDATES_PER_MINUTE = 5
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_NOT_DIGITS = re.compile(r"\D")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class UserError(Exception):
    """Internal: answer ``status`` with Zendesk's ``{"error", "description", "details"}`` body."""

    def __init__(self, status: int, error: str, description: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.body = {"error": error, "description": description}
        self.headers = dict(headers or {})


class Users:
    """End users by id; every public method takes the lock."""

    def __init__(
        self,
        user_fields: set[str],
        *,
        index_lag_seconds: float = INDEX_LAG_SECONDS,
        updates_per_minute: int | None = USER_UPDATES_PER_MINUTE,
    ) -> None:
        self.lock = threading.RLock()
        self.user_fields = user_fields
        self.index_lag_seconds = index_lag_seconds
        self.updates_per_minute = updates_per_minute
        self._users: dict[int, dict[str, Any]] = {}
        self._searchable_at: dict[int, float] = {}
        self._updates: dict[int, deque[float]] = {}
        self._ids = itertools.count(1001)

    def add(self, values: Mapping[str, Any], *, index_lag: float = 0.0) -> dict[str, Any]:
        with self.lock:
            user_id = next(self._ids)
            stamp = _now()
            fields = {key: None for key in self.user_fields} | dict(values.get("user_fields") or {})
            user = {
                "id": user_id,
                "url": f"/api/v2/users/{user_id}.json",
                "name": values.get("name"),
                "email": values.get("email"),
                "phone": values.get("phone"),
                "external_id": values.get("external_id"),
                "role": values.get("role") or "end-user",
                "user_fields": fields,
                "created_at": stamp,
                "updated_at": stamp,
            }
            self._users[user_id] = user
            self._searchable_at[user_id] = time.monotonic() + index_lag
            return copy.deepcopy(user)

    def get(self, user_id: int) -> dict[str, Any] | None:
        with self.lock:
            found = self._users.get(int(user_id))
            return copy.deepcopy(found) if found else None

    def all(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._users.values()))

    def clear(self) -> None:
        with self.lock:
            self._users.clear()
            self._searchable_at.clear()
            self._updates.clear()

    def _indexed(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [u for u in self._users.values() if self._searchable_at.get(u["id"], 0.0) <= now]

    def users_search(self, query: str) -> dict[str, Any]:
        """``GET /api/v2/users/search?query=``: part of a name, email or phone (indexed users)."""
        needle = query.strip().casefold()
        with self.lock:
            hits = [
                u
                for u in self._indexed()
                if needle and any(needle in str(u.get(k) or "").casefold() for k in ("name", "email", "phone"))
            ]
            return {"users": copy.deepcopy(hits), "next_page": None, "previous_page": None, "count": len(hits)}

    def search(self, query: str) -> dict[str, Any]:
        """``GET /api/v2/search.json?query=``: ``type:user``, ``role:``, ``phone:``, ``email:`` terms."""
        terms = dict(part.split(":", 1) for part in query.split() if ":" in part)
        with self.lock:
            users = self._indexed() if terms.get("type", "user") == "user" else []
            hits = [u for u in users if _matches(u, terms)]
            results = [copy.deepcopy(u) | {"result_type": "user"} for u in hits]
            return {"results": results, "count": len(results), "next_page": None, "previous_page": None, "facets": None}

    def create_or_update(self, body: Any) -> tuple[int, dict[str, Any]]:
        """Match on email, then external id (the database, not the index); update it or create one."""
        values = body.get("user") if isinstance(body, dict) else None
        if not isinstance(values, dict):
            raise UserError(400, "InvalidValue", 'send {"user": {...}}')
        email = values.get("email")
        if email is not None and not _EMAIL.match(str(email)):
            raise UserError(422, "RecordInvalid", f"Email: {email} is not properly formatted")
        with self.lock:
            found = None
            for user in self._users.values():
                same_email = email and str(user.get("email") or "").casefold() == str(email).casefold()
                same_id = values.get("external_id") and user.get("external_id") == values.get("external_id")
                if same_email or same_id:
                    found = user
                    break
            if found is None:
                if not values.get("name"):
                    raise UserError(422, "RecordInvalid", "Name: cannot be blank")
                return 201, self.add(values, index_lag=self.index_lag_seconds)
            return 200, self.update(found["id"], values)

    def update(self, user_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            user = self._users.get(user_id)
            if user is None:
                raise UserError(404, "RecordNotFound", "Not found")
            self._count_update(user)
            for key in ("name", "email", "phone", "external_id"):
                if key in changes:
                    user[key] = changes[key]
            fields = changes.get("user_fields")
            if isinstance(fields, dict):
                user["user_fields"].update({k: v for k, v in fields.items() if k in self.user_fields})
            user["updated_at"] = _now()
            return copy.deepcopy(user)

    def _count_update(self, user: Mapping[str, Any]) -> None:
        if not self.updates_per_minute:
            return
        now = time.monotonic()
        recent = self._updates.setdefault(int(user["id"]), deque())
        while recent and recent[0] <= now - 60.0:
            recent.popleft()
        if len(recent) >= self.updates_per_minute:
            wait = max(1, int(recent[0] + 60.0 - now) + 1)
            raise UserError(
                429,
                "TooManyRequests",
                "You have exceeded the rate limit for updating a single unique user.",
                {"Retry-After": str(wait)},
            )
        recent.append(now)


def _matches(user: Mapping[str, Any], terms: Mapping[str, str]) -> bool:
    if "role" in terms and user.get("role") != terms["role"]:
        return False
    if "email" in terms and str(user.get("email") or "").casefold() != terms["email"].casefold():
        return False
    if "phone" in terms:
        wanted = terms["phone"]
        suffix = wanted.startswith("*")
        number = wanted.lstrip("*")
        if not number.isdigit():  # "+", spaces, dashes or parentheses: Zendesk finds nothing
            return False
        digits = _NOT_DIGITS.sub("", str(user.get("phone") or ""))
        if not (digits.endswith(number) if suffix else digits == number):
            return False
    return True
