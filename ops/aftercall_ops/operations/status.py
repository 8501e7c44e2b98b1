"""``aftercall status``: how full the failed-events queue is, what failed, and how long ago.

Depth comes from GetQueueAttributes. Everything else needs the messages themselves, which SQS
only shows by receiving them: status *peeks* — receives with a short visibility timeout (30 s,
so a crash hides nothing for long), reads, then makes every peeked message visible again at once
(ChangeMessageVisibilityBatch 0). Nothing is deleted. A replay running at the same moment may
miss the peeked messages for that instant; they are there for its next pass.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import botocore.exceptions

from aftercall_ops.operations.dlq import RECEIVE_ARGS, SHAPES, FailedEvent, classify
from aftercall_ops.operations.replay import SQS_BATCH, queue_depth
from aftercall_ops.operations.targets import Client, describe_aws_error

PEEK_VISIBILITY_SECONDS = 30


@dataclass
class StatusReport:
    """The queue's state. Counts cover the ``peeked`` messages; ``complete`` says if that is all of them."""

    queue_url: str
    visible: int
    in_flight: int
    peeked: int = 0
    complete: bool = True
    oldest_sent_at: datetime | None = None
    oldest_age_seconds: float | None = None
    by_error: dict[str, int] = field(default_factory=dict)
    by_shape: dict[str, int] = field(default_factory=dict)
    recent: list[FailedEvent] = field(default_factory=list)
    release_failures: list[str] = field(default_factory=list)

    @property
    def depth(self) -> int:
        return self.visible + self.in_flight

    @property
    def empty(self) -> bool:
        return self.depth == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "queue_url": self.queue_url,
            "depth": self.depth,
            "visible": self.visible,
            "in_flight": self.in_flight,
            "peeked": self.peeked,
            "complete": self.complete,
            "oldest_sent_at": self.oldest_sent_at.isoformat() if self.oldest_sent_at else None,
            "oldest_age_seconds": round(self.oldest_age_seconds, 1) if self.oldest_age_seconds is not None else None,
            "by_error": self.by_error,
            "by_shape": self.by_shape,
            "recent": [message.to_json() for message in self.recent],
            "release_failures": self.release_failures,
        }


def error_kind(message: FailedEvent) -> str:
    """The grouping key for "counts by error": the error type and condition, not the per-call text."""
    if not message.recognised:
        return "unrecognised message"
    parts = [message.error_type or "unknown error"]
    if message.condition:
        parts.append(f"[{message.condition}]")
    return " ".join(parts)


def status(
    sqs: Client, queue_url: str, *, peek: int = 1000, recent: int = 10, max_seconds: float = 60.0
) -> StatusReport:
    """Depth, oldest message, counts by error and by shape, the ``recent`` newest failures.

    Peeks at most ``peek`` messages (0: depth only) and for at most ``max_seconds``.
    """
    if peek < 0:
        raise ValueError(f"--peek must not be negative, got {peek}")
    if recent < 0:
        raise ValueError(f"--recent must not be negative, got {recent}")
    visible, in_flight = queue_depth(sqs, queue_url)
    report = StatusReport(queue_url, visible, in_flight)
    if peek == 0 or visible == 0:
        report.complete = visible == 0
        return report
    now = datetime.now(UTC)
    messages: dict[str, FailedEvent] = {}
    deadline = time.monotonic() + max_seconds
    # Bounded: each receive either brings new messages or ends the loop.
    for _ in range(peek // SQS_BATCH + visible // SQS_BATCH + 10):
        if len(messages) >= peek or time.monotonic() > deadline:
            break
        try:
            response = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=min(SQS_BATCH, peek - len(messages)),
                WaitTimeSeconds=1,
                VisibilityTimeout=PEEK_VISIBILITY_SECONDS,
                **RECEIVE_ARGS,
            )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            report.release_failures.append(f"peek stopped early: {describe_aws_error(exc) or exc}")
            break
        batch = [classify(message, now) for message in response.get("Messages", [])]
        fresh = [message for message in batch if message.message_id not in messages]
        for message in batch:
            messages[message.message_id] = message  # keep the newest receipt handle for the release
        if not fresh:
            break
    _release(sqs, queue_url, list(messages.values()), report)
    peeked = list(messages.values())
    report.peeked = len(peeked)
    report.complete = len(peeked) >= visible
    shapes = Counter(message.shape for message in peeked)
    report.by_shape = {shape: shapes[shape] for shape in SHAPES if shapes[shape]}
    report.by_error = dict(Counter(error_kind(message) for message in peeked).most_common())
    dated = [message for message in peeked if message.sent_at is not None]
    if dated:
        oldest = min(dated, key=lambda message: message.sent_at or now)
        report.oldest_sent_at = oldest.sent_at
        report.oldest_age_seconds = oldest.age_seconds
    newest_first = sorted(peeked, key=lambda message: message.sent_at or now, reverse=True)
    report.recent = newest_first[:recent]
    return report


def _release(sqs: Client, queue_url: str, messages: list[FailedEvent], report: StatusReport) -> None:
    for start in range(0, len(messages), SQS_BATCH):
        chunk = messages[start : start + SQS_BATCH]
        entries = [
            {"Id": str(index), "ReceiptHandle": message.receipt_handle, "VisibilityTimeout": 0}
            for index, message in enumerate(chunk)
        ]
        try:
            response = sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            report.release_failures.append(
                f"{len(chunk)} peeked message(s) stay hidden for up to {PEEK_VISIBILITY_SECONDS} s: "
                f"{describe_aws_error(exc) or exc}"
            )
            continue
        for failed in response.get("Failed", []):
            report.release_failures.append(
                f"message {chunk[int(failed['Id'])].message_id} stays hidden for up to "
                f"{PEEK_VISIBILITY_SECONDS} s: {failed.get('Code')}"
            )
