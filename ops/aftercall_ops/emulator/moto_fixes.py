"""A fix for a moto thread-safety bug that loses SQS messages; apply it in any process running moto.

moto's ``Queue.delete_message`` rebuilds the queue's message list without holding the lock that
``Queue.add_message`` takes. Two overlapping requests on a threaded moto server (two
DeleteMessageBatch calls, or a delete and a send) can then undo each other: a deleted message
comes back, or a message just sent is lost. Real SQS never does this, and "nothing is lost" is
exactly what replay and the local stack are tested for, so processes that run moto in server mode
make deletes take the same lock. (Two overlapping receives may still return the same message:
that is SQS's own at-least-once contract, which replay handles.)
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_applied = False
_guard = threading.Lock()


def serialise_sqs_deletes() -> None:
    """Make moto's SQS deletes take the queue's message lock (idempotent; call before serving)."""
    global _applied
    with _guard:
        if _applied:
            return
        from moto.sqs.models import Queue

        original = Queue.delete_message

        @functools.wraps(original)
        def delete_message(self: Any, receipt_handle: str) -> None:
            with self._messages_lock:
                original(self, receipt_handle)

        Queue.delete_message = delete_message  # type: ignore[method-assign]
        _applied = True


_reserved_applied = False

#: PutEventsResultEntry.ErrorCode for a source the caller may not use (EventBridge API reference:
#: "NotAuthorizedForSourceException — You do not have permissions to publish events with this
#: source onto this event bus."). Sources starting with ``aws.`` are AWS services' own.
NOT_AUTHORIZED_FOR_SOURCE = "NotAuthorizedForSourceException"


def refuse_reserved_sources() -> None:
    """Make moto's PutEvents refuse entries whose source starts with ``aws.``, as EventBridge does.

    moto accepts them, so a tool that puts an Amazon Connect event back on a bus would look like it
    worked locally; in AWS the entry fails and no rule ever sees it. Idempotent; call before serving.
    """
    global _reserved_applied
    with _guard:
        if _reserved_applied:
            return
        from moto.events.models import EventsBackend

        original = EventsBackend.put_events

        @functools.wraps(original)
        def put_events(self: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
            reserved = [str(event.get("Source") or "").startswith("aws.") for event in events]
            if len(events) > 10 or not any(reserved):
                return original(self, events)  # moto's own checks (at most 10 entries) come first
            allowed = iter(original(self, [e for e, r in zip(events, reserved, strict=True) if not r]))
            refused = {"ErrorCode": NOT_AUTHORIZED_FOR_SOURCE, "ErrorMessage": "Not authorized for the source."}
            return [dict(refused) if r else next(allowed) for r in reserved]

        EventsBackend.put_events = put_events  # type: ignore[method-assign]
        _reserved_applied = True


_dynamodb_applied = False


def serialise_dynamodb_writes() -> None:
    """Make moto's DynamoDB writes atomic: one at a time, as a conditional write is in DynamoDB.

    moto checks a ``ConditionExpression`` and then writes, without a lock: two overlapping
    conditional writes on a threaded moto server can both pass (found by the caller lease test:
    two environments taking the same lease at the same instant). Real DynamoDB evaluates the
    condition and writes atomically. Idempotent; call before serving.
    """
    global _dynamodb_applied
    with _guard:
        if _dynamodb_applied:
            return
        from moto.dynamodb.models import DynamoDBBackend

        lock = threading.RLock()
        for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
            original = getattr(DynamoDBBackend, name)

            def locked(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
                with lock:
                    return __original(self, *args, **kwargs)

            setattr(DynamoDBBackend, name, functools.wraps(original)(locked))
        _dynamodb_applied = True


def apply() -> None:
    """Every fix above: what a moto server standing in for AWS in this process needs."""
    serialise_sqs_deletes()
    refuse_reserved_sources()
    serialise_dynamodb_writes()
