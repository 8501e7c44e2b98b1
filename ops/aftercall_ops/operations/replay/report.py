"""What a replay pass is asked to do (:class:`ReplayOptions`) and what it did (:class:`ReplayReport`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from aftercall.models.event import DETAIL_TYPE
from aftercall.privacy import redact
from aftercall_ops.operations.dlq import FailedEvent, Shape
from aftercall_ops.operations.emit import RetryPolicy
from aftercall_ops.operations.targets import DEFAULT_FUNCTION_TIMEOUT

Mode = Literal["invoke", "put-events"]
MODES: tuple[Mode, ...] = ("invoke", "put-events")
Action = Literal["replayed", "failed-again", "skipped", "unrecognised", "would-replay"]

SQS_BATCH = 10
#: Codes that mean "this receipt handle no longer holds the message": nothing to release.
GONE = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight"})
#: Invoke errors that every other message would hit too: stop the pass instead of failing each.
FATAL_INVOKE = frozenset(
    {"ResourceNotFoundException", "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException"}
)
MAX_CONSECUTIVE_UNREACHABLE = 3
#: PutEvents retries during a replay: a few, since a message that fails stays in the queue anyway.
REPLAY_RETRY = RetryPolicy(max_attempts=3)


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay. ``rate`` is hand-backs per second; ``max_seconds`` bounds the whole pass."""

    mode: Mode = "put-events"
    dry_run: bool = False
    conversation_ids: frozenset[str] = frozenset()
    error_contains: str | None = None
    limit: int | None = None
    concurrency: int = 4
    rate: float | None = None
    visibility_timeout: int | None = None
    wait_seconds: int = 1
    max_seconds: float = 3600.0
    function_timeout: int = DEFAULT_FUNCTION_TIMEOUT
    #: This stack's event source: put-events hands back only Conversation Ended events from it
    #: (None: unknown, so any source but ``aws.*``).
    event_source: str | None = None
    #: invoke mode targets the stack's End function, which takes Conversation Ended events only.
    end_function: bool = False

    def check(self) -> None:
        """Raise ValueError naming the first option that makes no sense."""
        if self.mode not in MODES:
            raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {self.limit}")
        if not 1 <= self.concurrency <= 64:
            raise ValueError(f"--concurrency must be between 1 and 64, got {self.concurrency}")
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"--rate must be a positive number of messages per second, got {self.rate}")
        if self.visibility_timeout is not None and not 1 <= self.visibility_timeout <= 43200:
            raise ValueError(f"--visibility-timeout must be 1..43200 seconds, got {self.visibility_timeout}")
        if not 0 <= self.wait_seconds <= 20:
            raise ValueError(f"wait_seconds must be 0..20, got {self.wait_seconds}")
        if not self.max_seconds > 0:
            raise ValueError(f"--max-seconds must be positive, got {self.max_seconds}")
        if self.error_contains is not None and not self.error_contains.strip():
            raise ValueError("--error-contains must not be empty")

    def refusal(self, message: FailedEvent) -> str | None:
        """Why this mode cannot hand the message's payload back (None: it can); such messages stay.

        PutEvents gives an event to every rule on the bus, so only this stack's own events may go
        that way: EventBridge refuses ``aws.*`` sources from callers (NotAuthorizedForSourceException),
        and an event no rule matches would be "replayed" into nothing and deleted. The End function
        takes Conversation Ended events only; a follow-up payload or an Amazon Connect contact event
        belongs to another function.
        """
        if message.payload_kind == "follow-up":
            if self.mode != "invoke" or self.end_function:
                return "a follow-up payload: replay it with --mode invoke --function <FollowUpFunctionName>"
            return None
        source, detail_type = redact(message.source or "")[:40], redact(message.detail_type or "")[:40]
        if source.startswith("aws."):
            if self.mode == "put-events" or self.end_function:
                return (
                    f"an AWS service event (source {source}): EventBridge accepts no aws.* source from "
                    "callers and the End function does not take it; replay it with --mode invoke "
                    "--function <the function that failed it, e.g. the ConnectIngestFunction>"
                )
            return None
        if self.mode == "put-events" or self.end_function:
            wanted_source = self.event_source if self.mode == "put-events" else None
            if detail_type != DETAIL_TYPE or (wanted_source and source != wanted_source):
                return (
                    f"not this stack's event (source {source!r}, detail-type {detail_type!r}; the "
                    f"stack takes {wanted_source or 'its own source'!r}, {DETAIL_TYPE!r}): no rule would take it back"
                )
        return None

    @property
    def visibility(self) -> int:
        """How long received messages stay invisible: longer than one hand-back can take."""
        if self.visibility_timeout is not None:
            return self.visibility_timeout
        if self.dry_run:
            return 60
        if self.mode == "invoke":
            return max(300, self.function_timeout + 60)
        return 300

    @property
    def invoke_read_timeout(self) -> int:
        """Longer than the function's own timeout, so a slow run is waited for, never re-sent."""
        return self.function_timeout + 30


@dataclass(frozen=True)
class MessageOutcome:
    """What the pass did with one message, and why."""

    message_id: str
    shape: Shape
    conversation_id: str | None
    error: str
    age_seconds: float | None
    action: Action
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "shape": self.shape,
            "conversation_id": self.conversation_id,
            "error": self.error,
            "age_seconds": round(self.age_seconds, 1) if self.age_seconds is not None else None,
            "action": self.action,
            "detail": self.detail,
        }


@dataclass
class ReplayReport:
    """The summary ``aftercall replay`` prints; ``ok`` is False if anything failed or was not understood."""

    mode: Mode
    dry_run: bool
    queue_url: str
    depth_at_start: int
    stopped: str = ""
    seconds: float = 0.0
    outcomes: list[MessageOutcome] = field(default_factory=list)
    release_failures: list[str] = field(default_factory=list)
    aborted: str | None = None
    interrupted: bool = False

    def count(self, action: Action) -> int:
        return sum(1 for outcome in self.outcomes if outcome.action == action)

    @property
    def ok(self) -> bool:
        return (
            self.count("failed-again") == 0
            and self.count("unrecognised") == 0
            and not self.release_failures
            and self.aborted is None
            and not self.interrupted
        )

    def summary(self) -> dict[str, int]:
        counts = {
            "replayed": self.count("replayed"),
            "failed_again": self.count("failed-again"),
            "skipped": self.count("skipped"),
            "unrecognised": self.count("unrecognised"),
        }
        if self.dry_run:
            counts["would_replay"] = self.count("would-replay")
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "mode": self.mode,
            "dry_run": self.dry_run,
            "queue_url": self.queue_url,
            "depth_at_start": self.depth_at_start,
            "summary": self.summary(),
            "stopped": self.stopped,
            "aborted": self.aborted,
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 3),
            "release_failures": self.release_failures,
            "messages": [outcome.to_json() for outcome in self.outcomes],
        }
