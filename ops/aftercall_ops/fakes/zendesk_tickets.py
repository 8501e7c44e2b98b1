"""The fake Zendesk's tickets: created once per ``Idempotency-Key``, validated, listed and read.

What Zendesk documents and this fake keeps:

* ``POST /api/v2/tickets`` with ``Idempotency-Key`` (up to 255 characters, kept two hours): a
  repeat with the same body replays the first answer with ``x-idempotency-lookup: hit`` (the
  first answers ``miss``) and creates nothing; the same key with a different body answers 400
  ``IdempotentRequestError``. Only successful creates are remembered, so a refused one can be
  corrected and sent again. Validation answers 422 ``RecordInvalid``.
* ``GET /api/v2/tickets?external_id=``, ``GET /api/v2/tickets/<id>``,
  ``GET /api/v2/tickets/<id>/comments``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aftercall_ops.fakes.server import Answer, Request
from aftercall_ops.fakes.zendesk_users import Users

IDEMPOTENCY_TTL_SECONDS = 2 * 3600
MAX_IDEMPOTENCY_KEY = 255
PRIORITIES = ("low", "normal", "high", "urgent")
AGENT_ID = 900_001


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def zendesk_error(error: str, description: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Zendesk's error body: ``{"error", "description"}``, with ``details`` per field when given."""
    body: dict[str, Any] = {"error": error, "description": description}
    if details:
        body["details"] = dict(details)
    return body


def _invalid(field: str, message: str) -> Answer:
    details = {field: [{"description": message, "error": "InvalidValue"}]}
    return Answer(422, zendesk_error("RecordInvalid", "Record validation errors", details))


class ZendeskTickets:
    """Tickets, their comments and the idempotency keys of their creates; every public method takes the lock."""

    def __init__(self, people: Users, *, idempotency_ttl: float = IDEMPOTENCY_TTL_SECONDS) -> None:
        self.lock = threading.RLock()
        self._people = people
        self._ttl = idempotency_ttl
        self._tickets: dict[int, dict[str, Any]] = {}
        self._comments: dict[int, list[dict[str, Any]]] = {}
        #: key → (expires at (monotonic), body digest, the answer given)
        self._idempotency: dict[str, tuple[float, str, Answer]] = {}
        self._ticket_ids = itertools.count(1)
        self._comment_ids = itertools.count(5001)
        self.idempotent_replays = 0

    def all(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._tickets.values()))

    def comments(self, ticket_id: int | str) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._comments.get(int(ticket_id), []))

    def idempotency_keys(self) -> int:
        """How many keys are remembered."""
        with self.lock:
            return len(self._idempotency)

    def expire_idempotency_keys(self) -> None:
        """As if two hours had passed: every key is forgotten."""
        with self.lock:
            self._idempotency.clear()

    def clear(self) -> None:
        with self.lock:
            self._tickets.clear()
            self._comments.clear()
            self._idempotency.clear()

    def create(self, request: Request, body: Any) -> Answer:
        """``POST /api/v2/tickets``: a repeat of a remembered key replays; a new one creates."""
        key = request.header("Idempotency-Key")
        if key is not None and len(key) > MAX_IDEMPOTENCY_KEY:
            description = f"keys are at most {MAX_IDEMPOTENCY_KEY} characters"
            return Answer(400, zendesk_error("InvalidIdempotencyKey", description))
        digest = hashlib.sha256(request.raw).hexdigest()
        with self.lock:
            if key is not None:
                remembered = self._idempotency.get(key)
                if remembered is not None and remembered[0] <= time.monotonic():
                    del self._idempotency[key]
                    remembered = None
                if remembered is not None:
                    if remembered[1] != digest:
                        description = "Request parameters don't match the given idempotency key"
                        return Answer(400, zendesk_error("IdempotentRequestError", description))
                    self.idempotent_replays += 1
                    first = remembered[2]
                    return Answer(
                        first.status, copy.deepcopy(first.body), {**first.headers, "x-idempotency-lookup": "hit"}
                    )
            answer = self._new_ticket(body)
            if key is not None and 200 <= answer.status < 300:
                answer.headers["x-idempotency-lookup"] = "miss"
                self._idempotency[key] = (time.monotonic() + self._ttl, digest, copy.deepcopy(answer))
            return answer

    def _new_ticket(self, body: Any) -> Answer:
        ticket = body.get("ticket") if isinstance(body, dict) else None
        if not isinstance(ticket, dict):
            return Answer(400, zendesk_error("InvalidValue", 'send {"ticket": {...}}'))
        comment = ticket.get("comment")
        text = (comment.get("body") or comment.get("html_body")) if isinstance(comment, dict) else None
        if not isinstance(text, str) or not text.strip():
            return _invalid("description", "Description: cannot be blank")
        requester_id = ticket.get("requester_id")
        if not isinstance(requester_id, int) or self._people.get(requester_id) is None:
            return _invalid("requester", "Requester: is invalid")
        priority = ticket.get("priority")
        if priority is not None and priority not in PRIORITIES:
            return _invalid("priority", f"Priority: {priority} is not valid")
        tags = ticket.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            return _invalid("tags", "Tags: must be a list of strings")
        ticket_id = next(self._ticket_ids)
        stamp = _now()
        subject = str(ticket.get("subject") or text.strip().splitlines()[0][:80])
        stored = {
            "id": ticket_id,
            "url": f"/api/v2/tickets/{ticket_id}.json",
            "external_id": ticket.get("external_id"),
            "subject": subject,
            "raw_subject": subject,
            "description": text,
            "priority": priority,
            "status": "new",
            "requester_id": requester_id,
            "submitter_id": AGENT_ID,
            "tags": sorted({tag.strip().lower().replace(" ", "_") for tag in tags}),
            "created_at": stamp,
            "updated_at": stamp,
        }
        public = comment.get("public", True) if isinstance(comment, dict) else True
        self._tickets[ticket_id] = stored
        self._comments[ticket_id] = [
            {
                "id": next(self._comment_ids),
                "type": "Comment",
                "author_id": AGENT_ID,
                "body": text,
                "public": bool(public),
                "created_at": stamp,
            }
        ]
        return Answer(201, {"ticket": copy.deepcopy(stored)}, {"Location": f"/api/v2/tickets/{ticket_id}.json"})

    def listing(self, external_id: str | None) -> Answer:
        """``GET /api/v2/tickets?external_id=``."""
        with self.lock:
            tickets = [t for t in self._tickets.values() if external_id is None or t["external_id"] == external_id]
            return Answer(
                200,
                {"tickets": copy.deepcopy(tickets), "next_page": None, "previous_page": None, "count": len(tickets)},
            )

    def get(self, ticket_id: int, *, comments: bool) -> Answer:
        """``GET /api/v2/tickets/<id>`` or, with ``comments``, ``.../comments``."""
        with self.lock:
            found = self._tickets.get(ticket_id)
            if found is None:
                return Answer(404, zendesk_error("RecordNotFound", "Not found"))
            if comments:
                listed = self._comments.get(ticket_id, [])
                return Answer(200, {"comments": copy.deepcopy(listed), "count": len(listed)})
            return Answer(200, {"ticket": copy.deepcopy(found)})
