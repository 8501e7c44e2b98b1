"""Errors the runtime raises, each naming what went wrong and whether a retry can help.

``permanent`` errors cannot succeed on retry (the event itself is wrong); the handler parks
them in the failed-events queue at once instead of burning Lambda's async retries.
"""

from __future__ import annotations


class AftercallError(Exception):
    """Base class: every error the runtime raises on purpose."""

    permanent: bool = False


class InvalidEventError(AftercallError):
    """The event does not match the ``Conversation Ended`` contract."""

    permanent = True


class ConflictingDuplicateError(AftercallError):
    """A second event carries an already-seen conversation id but different content."""

    permanent = True


class EndFunctionError(AftercallError):
    """The user's ``end_function`` raised; the original exception is chained."""


class ConfigurationError(AftercallError):
    """A required setting (environment variable) is missing or malformed."""


class SecretError(AftercallError):
    """A secret in Secrets Manager (the CRM's credentials, ingest's signing keys) is missing,
    unreadable or malformed: retried, it succeeds once someone creates or fixes it."""


class CrmCredentialsError(AftercallError):
    """The CRM refused the credentials from its secret, even after re-reading it (a rotation not stored)."""


class CrmUnavailableError(AftercallError):
    """The CRM could not be reached or kept failing after retries (retryable later)."""


class CrmAmbiguousError(CrmUnavailableError):
    """A create that may or may not have been applied: the unanswered-write protocol (:mod:`aftercall.crm.http`).

    ``unanswered_at``: when it was sent, if no answer came (epoch seconds).
    """

    def __init__(self, message: str, *, unanswered_at: float | None = None, answered_at: float | None = None) -> None:
        super().__init__(message)
        self.unanswered_at = unanswered_at
        #: Set when the CRM did answer (a 5xx): whatever it applied, it applied before this time.
        self.answered_at = answered_at


class CrmRequestError(AftercallError):
    """The CRM rejected a request in a way retrying will not fix (4xx other than 401/408/429)."""

    def __init__(self, message: str, status: int, body: object = None) -> None:
        super().__init__(message)
        self.status = status
        #: The CRM's decoded answer, for adapters that read it (HubSpot's "Existing ID" on a 409).
        #: Never put in the message: it may quote personal data.
        self.body = body


class UnknownContactError(AftercallError):
    """No CRM contact matches the conversation's phone number or email."""


class ActionInProgressError(AftercallError):
    """Another invocation is performing this action right now; retry later."""


class ActionsFailedError(AftercallError):
    """One or more actions failed; the others completed and will not be repeated on retry."""

    def __init__(self, conversation_id: str, failures: dict[str, BaseException]) -> None:
        self.conversation_id = conversation_id
        self.failures = failures
        detail = "; ".join(f"{name}: {type(exc).__name__}: {exc}" for name, exc in failures.items())
        super().__init__(f"{len(failures)} action(s) failed for conversation {conversation_id}: {detail}")


class FollowUpTimeError(AftercallError):
    """A follow-up's time is too far in the past to send, or too far ahead to schedule."""


class FollowUpPayloadError(AftercallError):
    """The follow-up target received a payload it cannot send (not one aftercall scheduled)."""

    permanent = True
