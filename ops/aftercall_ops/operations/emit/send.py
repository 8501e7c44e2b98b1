"""Sending: PutEvents per batch, retrying the entries that come back failed with jittered backoff."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import botocore.exceptions

from aftercall_ops.operations.emit.model import (
    DEFAULT_RETRY,
    FATAL_CALL_ERRORS,
    MAX_BATCH_ENTRIES,
    PERMANENT_ENTRY_ERRORS,
    RETRYABLE_CALL_ERRORS,
    EmitReport,
    EntryFailure,
    EntryOutcome,
    PreparedEntry,
    RetryPolicy,
)
from aftercall_ops.operations.emit.prepare import batches
from aftercall_ops.operations.targets import Client, describe_aws_error

# ---------------------------------------------------------------------------------------------- sending


class FatalSendError(Exception):
    """A call-level error that every further batch would hit too (missing bus, denied, bad credentials)."""


def put_batch(
    client: Client,
    entries: Sequence[dict[str, Any]],
    policy: RetryPolicy = DEFAULT_RETRY,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[EntryOutcome], int]:
    """Send one batch (≤10 entries); retry failed entries and throttled calls with backoff.

    Returns one outcome per entry, in order, and the number of PutEvents calls made. Raises
    :class:`FatalSendError` when the call itself fails in a way no retry can fix.
    """
    if len(entries) > MAX_BATCH_ENTRIES:
        raise ValueError(f"a PutEvents batch holds at most {MAX_BATCH_ENTRIES} entries, got {len(entries)}")
    outcomes: list[EntryOutcome | None] = [None] * len(entries)
    pending = list(range(len(entries)))
    calls = 0
    answered = False
    last_error: dict[int, tuple[str, str]] = {}
    for attempt in range(1, policy.max_attempts + 1):
        if attempt > 1:
            sleep(policy.delay(attempt - 1))
        calls += 1
        try:
            response = client.put_events(Entries=[entries[index] for index in pending])
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "ClientError"))
            message = str(error.get("Message", exc))
            if code in FATAL_CALL_ERRORS:
                raise FatalSendError(describe_aws_error(exc) or f"{code}: {message}") from exc
            for index in pending:
                last_error[index] = (code, message)
            if code in RETRYABLE_CALL_ERRORS:
                continue
            break
        except botocore.exceptions.BotoCoreError as exc:
            # Connection refused, timeouts: the entries may or may not have arrived; retry them,
            # EventBridge consumers (our handler) are idempotent per conversation.
            for index in pending:
                last_error[index] = (type(exc).__name__, describe_aws_error(exc) or str(exc))
            if attempt == policy.max_attempts and not answered:
                raise FatalSendError(describe_aws_error(exc) or str(exc)) from exc
            continue
        answered = True
        still: list[int] = []
        for index, result in zip(pending, response.get("Entries", []), strict=False):
            if result.get("EventId"):
                outcomes[index] = EntryOutcome(str(result["EventId"]), attempts=attempt)
                continue
            code = str(result.get("ErrorCode") or "Unknown")
            last_error[index] = (code, str(result.get("ErrorMessage") or ""))
            if code in PERMANENT_ENTRY_ERRORS:
                outcomes[index] = EntryOutcome(None, code, last_error[index][1], attempt)
            else:
                still.append(index)
        count = len(response.get("Entries", []))
        still.extend(pending[count:])  # an answer shorter than the request: retry the rest
        for index in pending[count:]:
            last_error.setdefault(index, ("NoAnswer", "PutEvents returned no result for this entry"))
        pending = still
        if not pending:
            break
    for index in range(len(entries)):
        if outcomes[index] is None:
            code, message = last_error.get(index, ("NotSent", "not sent"))
            outcomes[index] = EntryOutcome(None, code, message, policy.max_attempts)
    return [outcome for outcome in outcomes if outcome is not None], calls


def send(
    client: Client,
    entries: Sequence[PreparedEntry],
    *,
    concurrency: int = 4,
    policy: RetryPolicy = DEFAULT_RETRY,
    progress: Callable[[int], None] | None = None,
) -> EmitReport:
    """Send every entry in batches, ``concurrency`` batches at a time; report what was not accepted."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    all_batches = list(batches(entries))
    report = EmitReport(
        total=len(entries),
        dry_run=False,
        batches=len(all_batches),
        largest_entry_bytes=max((entry.size for entry in entries), default=0),
    )
    lock = threading.Lock()
    fatal: list[str] = []
    started = time.monotonic()

    def run(batch: list[PreparedEntry]) -> None:
        if fatal:
            outcomes = [EntryOutcome(None, "NotSent", f"not sent: {fatal[0]}", 0) for _ in batch]
            calls = 0
        else:
            try:
                outcomes, calls = put_batch(client, [entry.entry for entry in batch], policy)
            except FatalSendError as exc:
                with lock:
                    fatal.append(str(exc))
                outcomes = [EntryOutcome(None, "NotSent", str(exc), 1) for _ in batch]
                calls = 1
        with lock:
            report.api_calls += calls
            for entry, outcome in zip(batch, outcomes, strict=True):
                if outcome.attempts > 1:
                    report.retried_entries += 1
                if outcome.accepted:
                    report.accepted += 1
                else:
                    report.failures.append(
                        EntryFailure(
                            entry.origin,
                            entry.conversation_id,
                            outcome.error_code or "Unknown",
                            outcome.error_message or "",
                            outcome.attempts,
                        )
                    )
        if progress is not None:
            progress(len(batch))

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="emit") as pool:
        for future in [pool.submit(run, batch) for batch in all_batches]:
            future.result()
    position = {entry.origin: index for index, entry in enumerate(entries)}
    report.failures.sort(key=lambda failure: position.get(failure.origin, 0))  # in input order
    report.seconds = time.monotonic() - started
    return report


def dry_run(entries: Sequence[PreparedEntry]) -> EmitReport:
    """What :func:`send` would do, without sending: entry and batch counts, largest entry."""
    return EmitReport(
        total=len(entries),
        dry_run=True,
        batches=sum(1 for _ in batches(entries)),
        largest_entry_bytes=max((entry.size for entry in entries), default=0),
    )
