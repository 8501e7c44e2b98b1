"""Why ingest refused a request, as a stable reason code plus an HTTP status.

Vendors only see the status and the JSON body ``{"error": reason, "message": ...}``; the reason
codes are documented in ``docs/ingest.md`` so an operator can match a vendor's delivery log to
the cause. Messages name fields, never their values: a value may be a phone number or an email.
"""

from __future__ import annotations

from aftercall.errors import AftercallError


class IngestError(AftercallError):
    """A request or event that ingest will not put on the bus; ``status`` is the HTTP answer."""

    status: int = 400

    def __init__(self, reason: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        if status is not None:
            self.status = status


class SignatureError(IngestError):
    """The request is not provably from the platform: missing, malformed, stale or wrong signature."""

    status = 401


class PayloadError(IngestError):
    """The body is not JSON (400), or is JSON that cannot become a ``Conversation Ended`` event (422)."""

    permanent = True
    status = 422


class IngestUnavailableError(IngestError):
    """Ingest cannot finish now (secret unreadable, bus refused the event): the sender should retry."""

    status = 503
