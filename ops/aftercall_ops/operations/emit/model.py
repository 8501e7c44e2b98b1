"""What emit works with: its limits, the items read, the entries prepared, the outcomes, the report."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aftercall.models.event import MAX_EVENT_BYTES

#: The template's default ``EventSource``: used only when neither ``--source`` nor the stack says.
DEFAULT_SOURCE = "aftercall.platform"
MAX_BATCH_ENTRIES = 10
#: PutEvents also limits the whole request to 256 KB, so batches stay under it too.
MAX_REQUEST_BYTES = MAX_EVENT_BYTES
ENVIRONMENTS = ("sandbox", "live")
#: The most one input (a file, standard input) may hold: 400 events of the largest size. Every read
#: stops here, so a path to something endless is refused instead of filling the memory.
MAX_INPUT_BYTES = 100 * 1024 * 1024

#: Entry error codes that will fail the same way on every retry.
PERMANENT_ENTRY_ERRORS = frozenset(
    {
        "MalformedDetail",
        "InvalidArgument",
        "ValidationException",
        "AccessDeniedException",
        "NotAuthorizedForSourceException",
        "NotAuthorizedForDetailTypeException",
        "ResourceNotFoundException",
    }
)
#: Call-level error codes worth retrying with backoff; any other call error fails the batch.
RETRYABLE_CALL_ERRORS = frozenset(
    {"ThrottlingException", "Throttling", "InternalException", "InternalFailure", "ServiceUnavailable"}
)
#: Call-level errors that will fail every other batch the same way: stop sending.
FATAL_CALL_ERRORS = frozenset(
    {
        "ResourceNotFoundException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
    }
)


class EmitInputError(ValueError):
    """The input cannot be sent as it is; nothing was sent. ``problems`` lists every one found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:20]
        more = f"\n  … and {len(self.problems) - len(shown)} more" if len(self.problems) > len(shown) else ""
        super().__init__("nothing was sent:\n  " + "\n  ".join(shown) + more)


@dataclass(frozen=True)
class RawItem:
    """One JSON value read from an input, with where it came from (for error messages)."""

    origin: str
    value: Any


@dataclass(frozen=True)
class PreparedEntry:
    """A PutEvents entry ready to send, its size as EventBridge counts it, and its origin."""

    origin: str
    conversation_id: str | None
    entry: dict[str, Any]
    size: int


@dataclass(frozen=True)
class EntryFailure:
    """An entry that EventBridge did not accept, after the retries."""

    origin: str
    conversation_id: str | None
    error_code: str
    error_message: str
    attempts: int

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "conversation_id": self.conversation_id,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "attempts": self.attempts,
        }


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter, for entries and for throttled calls."""

    max_attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 5.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class EntryOutcome:
    """What happened to one entry of a batch: its event id, or why it was not accepted."""

    event_id: str | None
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 1

    @property
    def accepted(self) -> bool:
        return self.event_id is not None


@dataclass
class EmitReport:
    """The result of ``aftercall emit``; ``ok`` is False when any entry was not accepted."""

    total: int
    dry_run: bool
    batches: int
    accepted: int = 0
    retried_entries: int = 0
    api_calls: int = 0
    seconds: float = 0.0
    failures: list[EntryFailure] = field(default_factory=list)
    largest_entry_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "total": self.total,
            "accepted": self.accepted,
            "not_accepted": len(self.failures),
            "batches": self.batches,
            "retried_entries": self.retried_entries,
            "api_calls": self.api_calls,
            "seconds": round(self.seconds, 3),
            "largest_entry_bytes": self.largest_entry_bytes,
            "failures": [failure.to_json() for failure in self.failures],
        }
