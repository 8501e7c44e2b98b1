"""``aftercall replay``: one pass over the failed-events queue, handing each event back.

The rules that make a replay safe to run at any time, and to kill at any time:

* **Delete only after success.** A message is deleted (DeleteMessageBatch) only once its event
  was accepted by PutEvents or the End function answered without error. Killed midway, a replay
  loses nothing: undeleted messages reappear when their visibility timeout ends.
* **One pass.** Every message received is remembered by id and held invisible until the pass
  ends, so none is handled twice; the pass stops when a receive returns nothing or only
  messages already seen. Messages whose event this pass itself produced (a re-failure of an
  event just handed back: same event id) are left for the next pass, so a poison message is
  reported once per pass and never loops.
* **Failed again stays.** A message whose hand-back failed is kept, and made visible again when
  the pass ends (ChangeMessageVisibilityBatch 0) so ``aftercall status``, the DLQ alarm and the
  next replay see it at once; if the replay dies first, it reappears after its visibility timeout.
* **Dry run changes nothing.** Messages are received to be listed, then made visible again.

Cost in ``put-events`` mode: one ReceiveMessage, one PutEvents and one DeleteMessageBatch per ten
messages (0.3 calls per message), ``concurrency`` such loops at a time.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import botocore.exceptions

from aftercall.models.event import DETAIL_TYPE, MAX_EVENT_BYTES
from aftercall.privacy import redact
from aftercall_ops.operations.dlq import RECEIVE_ARGS, FailedEvent, Shape, classify
from aftercall_ops.operations.emit import EntryOutcome, FatalSendError, RetryPolicy, entry_size, put_batch
from aftercall_ops.operations.targets import DEFAULT_FUNCTION_TIMEOUT, Aws, Client, TargetError, describe_aws_error

Mode = Literal["invoke", "put-events"]
MODES: tuple[Mode, ...] = ("invoke", "put-events")
Action = Literal["replayed", "failed-again", "skipped", "unrecognised", "would-replay"]

SQS_BATCH = 10
#: Codes that mean "this receipt handle no longer holds the message": nothing to release.
_GONE = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight"})
#: Invoke errors that every other message would hit too: stop the pass instead of failing each.
_FATAL_INVOKE = frozenset(
    {"ResourceNotFoundException", "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException"}
)
_MAX_CONSECUTIVE_UNREACHABLE = 3
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


class RateLimiter:
    """At most ``rate`` hand-backs per second on average, shared by all workers."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._next = clock()
        self._lock = threading.Lock()

    def acquire(self, count: int, stop: threading.Event) -> None:
        """Wait until ``count`` more hand-backs fit the rate (returns early if ``stop`` is set)."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + count / self.rate
        delay = start - now
        if delay > 0:
            stop.wait(delay)


@dataclass(frozen=True)
class _HandBack:
    ok: bool
    detail: str
    delete: bool
    new_event_id: str | None = None
    parked_as: str | None = None


class _Pass:
    """The shared state of one replay pass (all workers), guarded by one lock."""

    def __init__(self, sqs: Client, queue_url: str, options: ReplayOptions, report: ReplayReport) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.options = options
        self.report = report
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.seen: set[str] = set()
        self.handed_back_event_ids: set[str] = set()
        # message id -> every receipt handle it was received with, until deleted. Normally one; a
        # message received again (its visibility ran out, or a server that hands one message to two
        # concurrent receives, as moto does) has several, and only the newest one works.
        self.held: dict[str, list[str]] = {}
        self.deleted: set[str] = set()
        self.budget = options.limit
        self.receives = 0
        self.max_receives = 2 * report.depth_at_start + 20 * options.concurrency + 20
        self.deadline = time.monotonic() + options.max_seconds
        self.rate = RateLimiter(options.rate) if options.rate else None
        self.unreachable_in_a_row = 0
        # PutEvents calls in flight, so a message received meanwhile (possibly the failure of an event
        # one of them is putting back) is judged only once their new event ids are known.
        self.puts_done = threading.Condition(self.lock)
        self.puts_in_flight: set[int] = set()
        self.put_tickets = itertools.count()
        self.waits_for: dict[str, frozenset[int]] = {}
        self.recent_after: datetime | None = None

    # -------------------------------------------------------------- stopping
    def halt(self, reason: str) -> None:
        with self.lock:
            if not self.report.stopped:
                self.report.stopped = reason
        self.stop.set()

    def abort(self, error: str) -> None:
        with self.lock:
            if self.report.aborted is None:
                self.report.aborted = error
        self.halt(f"aborted: {error}")

    # -------------------------------------------------------------- receiving
    def receive(self, wanted: int) -> list[FailedEvent] | None:
        """Up to ``wanted`` messages not seen before in this pass; None when the pass is over."""
        if self.stop.is_set():
            return None
        with self.lock:
            if time.monotonic() > self.deadline:
                reason = f"time budget of {self.options.max_seconds:g} s used up"
            elif self.receives >= self.max_receives:
                reason = f"receive budget of {self.max_receives} calls used up"
            elif self.budget == 0:
                reason = f"--limit {self.options.limit} reached"
            else:
                reason = ""
                self.receives += 1
                if self.budget is not None:
                    wanted = min(wanted, self.budget)
        if reason:
            self.halt(reason)
            return None
        try:
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=max(1, min(SQS_BATCH, wanted)),
                WaitTimeSeconds=self.options.wait_seconds,
                VisibilityTimeout=self.options.visibility,
                **RECEIVE_ARGS,
            )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            self.abort(f"cannot receive from the queue: {describe_aws_error(exc) or exc}")
            return None
        messages = [classify(message) for message in response.get("Messages", [])]
        if not messages:
            self.halt("the queue has no more messages")
            return None
        fresh: list[FailedEvent] = []
        with self.lock:
            in_flight = frozenset(self.puts_in_flight)
            for message in messages:
                if message.message_id not in self.deleted:  # every undeleted message is released at the end
                    handles = self.held.setdefault(message.message_id, [])
                    if message.receipt_handle not in handles:
                        handles.append(message.receipt_handle)
                if message.message_id not in self.seen:
                    self.seen.add(message.message_id)
                    fresh.append(message)
                    recent = (
                        self.recent_after is None or message.sent_at is None or message.sent_at >= self.recent_after
                    )
                    if in_flight and recent:
                        self.waits_for[message.message_id] = in_flight
        if not fresh:
            self.halt("the queue returned only messages already seen in this pass")
            return None
        return fresh

    # -------------------------------------------------------------- deciding
    def triage(self, messages: Sequence[FailedEvent]) -> list[FailedEvent]:
        """Record skipped / unrecognised / dry-run outcomes; return the messages to hand back."""
        options = self.options
        candidates: list[FailedEvent] = []
        for message in messages:
            reason: str | None = None
            action: Action = "skipped"
            if not message.recognised:
                action, reason = "unrecognised", message.problem or "not understood"
            elif options.conversation_ids and message.conversation_id not in options.conversation_ids:
                reason = "filtered out by --conversation-id"
            elif options.error_contains and options.error_contains.lower() not in message.error.lower():
                reason = "filtered out by --error-contains"
            elif (refusal := options.refusal(message)) is not None:
                reason = refusal
            elif self._handed_back_earlier(message):
                reason = "its event was handed back earlier in this pass (this is that hand-back failing again)"
            if reason is None:
                with self.lock:
                    if self.budget == 0:
                        reason = f"--limit {options.limit} reached"
                    elif self.budget is not None:
                        self.budget -= 1
            if reason is not None:
                self.record(message, action, reason)
            elif options.dry_run:
                self.record(message, "would-replay", f"would {options.mode}")
            else:
                candidates.append(message)
        return candidates

    def _handed_back_earlier(self, message: FailedEvent) -> bool:
        """True if this message is the failure of an event this pass put back (same event id)."""
        with self.lock:
            tickets = self.waits_for.pop(message.message_id, frozenset())
            # Bounded: each PutEvents call ends within its read timeout and retries.
            self.puts_done.wait_for(lambda: not (tickets & self.puts_in_flight), timeout=120)
            return _event_id(message) in self.handed_back_event_ids

    def note_batch(self, failures: Sequence[EntryOutcome], size: int) -> None:
        """Stop the pass when whole batches keep failing the same way: the bus is not answering."""
        codes = {outcome.error_code for outcome in failures}
        with self.lock:
            if failures and len(failures) == size and len(codes) == 1:
                self.unreachable_in_a_row += 1
            else:
                self.unreachable_in_a_row = 0
            give_up = self.unreachable_in_a_row >= _MAX_CONSECUTIVE_UNREACHABLE
        if give_up:
            last = failures[-1]
            self.abort(
                f"PutEvents failed for {_MAX_CONSECUTIVE_UNREACHABLE} whole batches in a row "
                f"({last.error_code}: {last.error_message})"
            )

    def put_started(self) -> int:
        with self.lock:
            ticket = next(self.put_tickets)
            self.puts_in_flight.add(ticket)
            return ticket

    def put_finished(self, ticket: int, event_ids: Sequence[str | None]) -> None:
        with self.lock:
            self.handed_back_event_ids.update(event_id for event_id in event_ids if event_id)
            self.puts_in_flight.discard(ticket)
            self.puts_done.notify_all()

    def record(self, message: FailedEvent, action: Action, detail: str | None) -> None:
        outcome = MessageOutcome(
            message.message_id,
            message.shape,
            message.conversation_id,
            message.error,
            message.age_seconds,
            action,
            detail,
        )
        with self.lock:
            self.report.outcomes.append(outcome)

    def handed_back(self, *event_ids: str | None) -> None:
        with self.lock:
            self.handed_back_event_ids.update(event_id for event_id in event_ids if event_id)

    def see(self, message_id: str) -> None:
        """Mark a message this pass caused (the handler re-parked an event) so it is left alone."""
        with self.lock:
            self.seen.add(message_id)

    def pause(self, seconds: float) -> None:
        """Sleep for a retry backoff, but wake at once when the pass stops."""
        self.stop.wait(seconds)

    def wait_for_rate(self, count: int) -> None:
        if self.rate is not None:
            self.rate.acquire(count, self.stop)

    # -------------------------------------------------------------- finishing messages
    def finish(self, results: Sequence[tuple[FailedEvent, _HandBack]]) -> None:
        """Delete the messages handed back successfully (batched), then record every outcome."""
        to_delete = [message for message, result in results if result.delete]
        delete_errors = self.delete(to_delete)
        for message, result in results:
            if result.ok:
                detail = result.detail
                if message.message_id in delete_errors:
                    detail += (
                        f"; could not delete the message ({delete_errors[message.message_id]}): the next pass "
                        "hands it back again, which is harmless (processing is idempotent per conversation)"
                    )
                self.record(message, "replayed", detail)
            else:
                self.record(message, "failed-again", result.detail)

    def delete(self, messages: Sequence[FailedEvent]) -> dict[str, str]:
        """DeleteMessageBatch, ten entries a call; returns message id -> error for those not deleted.

        A message with several receipt handles is deleted with each (the newest one is the one that
        counts, and which one is newest is not known when receives overlap).
        """
        with self.lock:
            pairs = [(m.message_id, h) for m in messages for h in self.held.get(m.message_id, [m.receipt_handle])]
        failures: dict[str, list[str]] = {}
        attempts: dict[str, int] = {}
        for start in range(0, len(pairs), SQS_BATCH):
            chunk = pairs[start : start + SQS_BATCH]
            for message_id, _ in chunk:
                attempts[message_id] = attempts.get(message_id, 0) + 1
            entries = [{"Id": str(i), "ReceiptHandle": handle} for i, (_, handle) in enumerate(chunk)]
            try:
                response = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                for message_id, _ in chunk:
                    failures.setdefault(message_id, []).append(describe_aws_error(exc) or str(exc))
                continue
            for failed in response.get("Failed", []):
                message_id = chunk[int(failed["Id"])][0]
                failures.setdefault(message_id, []).append(f"{failed.get('Code')}: {failed.get('Message', '')}")
        # A message is deleted if any of its handles was accepted.
        errors = {mid: reasons[-1] for mid, reasons in failures.items() if len(reasons) >= attempts[mid]}
        with self.lock:
            for message in messages:
                if message.message_id not in errors:
                    self.held.pop(message.message_id, None)
                    self.deleted.add(message.message_id)
        return errors

    def release(self) -> None:
        """Make every held message visible again (ChangeMessageVisibilityBatch 0), ten entries a call."""
        with self.lock:
            pairs = [(message_id, handle) for message_id, handles in self.held.items() for handle in handles]
            several = {message_id for message_id, handles in self.held.items() if len(handles) > 1}
            self.held.clear()
        for start in range(0, len(pairs), SQS_BATCH):
            chunk = pairs[start : start + SQS_BATCH]
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0} for i, (_, handle) in enumerate(chunk)
            ]
            try:
                response = self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                self.report.release_failures.append(
                    f"{len(chunk)} message(s) stay invisible until their visibility timeout "
                    f"({self.options.visibility} s): {describe_aws_error(exc) or exc}"
                )
                continue
            for failed in response.get("Failed", []):
                message_id = chunk[int(failed["Id"])][0]
                if failed.get("Code") in _GONE or message_id in several:
                    continue  # already visible, or an outdated handle of a message released by its newest one
                self.report.release_failures.append(
                    f"message {message_id} stays invisible until its visibility timeout: "
                    f"{failed.get('Code')}: {failed.get('Message', '')}"
                )


def _event_id(message: FailedEvent) -> str | None:
    if message.event is None:
        return None
    event_id = message.event.get("id")
    return event_id if isinstance(event_id, str) else None


# ------------------------------------------------------------------------------------------ hand-back


def _entry(event: dict[str, Any], bus: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "Source": str(event.get("source") or ""),
        "DetailType": str(event.get("detail-type") or ""),
        "Detail": json.dumps(event.get("detail"), ensure_ascii=False, separators=(",", ":")),
        "EventBusName": bus,
    }
    resources = event.get("resources")
    if isinstance(resources, list) and resources and all(isinstance(r, str) for r in resources):
        entry["Resources"] = resources
    return entry


def _put_events(
    state: _Pass, events: Client, bus: str, messages: Sequence[FailedEvent], policy: RetryPolicy
) -> list[tuple[FailedEvent, _HandBack]]:
    results: list[tuple[FailedEvent, _HandBack]] = []
    sendable: list[tuple[FailedEvent, dict[str, Any]]] = []
    for message in messages:
        assert message.event is not None  # triage only passes recognised messages
        entry = _entry(message.event, bus)
        size = entry_size(entry)
        if not entry["Source"] or not entry["DetailType"]:
            results.append((message, _HandBack(False, "the event has no source or detail-type to put", False)))
        elif size > MAX_EVENT_BYTES:
            results.append((message, _HandBack(False, f"entry is {size:,} bytes, over {MAX_EVENT_BYTES:,}", False)))
        else:
            sendable.append((message, entry))
    # Batches of ≤10 and ≤256 KB in total, like emit.
    chunk: list[tuple[FailedEvent, dict[str, Any]]] = []
    chunks: list[list[tuple[FailedEvent, dict[str, Any]]]] = []
    chunk_bytes = 0
    for message, entry in sendable:
        size = entry_size(entry)
        if chunk and (len(chunk) == SQS_BATCH or chunk_bytes + size > MAX_EVENT_BYTES):
            chunks.append(chunk)
            chunk, chunk_bytes = [], 0
        chunk.append((message, entry))
        chunk_bytes += size
    if chunk:
        chunks.append(chunk)
    for batch in chunks:
        ticket = state.put_started()
        event_ids: list[str | None] = [_event_id(message) for message, _ in batch]
        try:
            outcomes, _ = put_batch(events, [entry for _, entry in batch], policy, sleep=state.pause)
            event_ids.extend(outcome.event_id for outcome in outcomes)
        except FatalSendError as exc:
            state.abort(f"PutEvents failed: {exc}")
            results.extend((message, _HandBack(False, f"PutEvents failed: {exc}", False)) for message, _ in batch)
            continue
        finally:
            # Also on failure: a call that timed out may still have put some events on the bus.
            state.put_finished(ticket, event_ids)
        state.note_batch([outcome for outcome in outcomes if not outcome.accepted], len(outcomes))
        for (message, _), outcome in zip(batch, outcomes, strict=True):
            if outcome.accepted:
                results.append(
                    (message, _HandBack(True, f"put on the bus as event {outcome.event_id}", True, outcome.event_id))
                )
            else:
                error = f"PutEvents did not accept it: {outcome.error_code}: {outcome.error_message}"
                results.append((message, _HandBack(False, error, False)))
    return results


def _invoke(state: _Pass, lam: Client, function: str, message: FailedEvent) -> _HandBack:
    """One synchronous invoke; a function error, throttle or timeout means "failed again"."""
    assert message.event is not None
    state.handed_back(_event_id(message))
    try:
        response = lam.invoke(
            FunctionName=function,
            InvocationType="RequestResponse",
            Payload=json.dumps(message.event).encode("utf-8"),
        )
        raw = response["Payload"].read()
    except botocore.exceptions.ReadTimeoutError:
        return _HandBack(
            False,
            f"no answer within {lam.meta.config.read_timeout:g} s (not retried: the run may still finish). The "
            "message stays; replaying it later is harmless (processing is idempotent per conversation)",
            False,
        )
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "ClientError"))
        text = f"{code}: {error.get('Message', '')}"
        if code in _FATAL_INVOKE:
            state.abort(f"cannot invoke {function}: {describe_aws_error(exc) or text}")
        return _HandBack(False, f"invoke failed: {text}", False)
    except botocore.exceptions.BotoCoreError as exc:
        with state.lock:
            state.unreachable_in_a_row += 1
            give_up = state.unreachable_in_a_row >= _MAX_CONSECUTIVE_UNREACHABLE
        text = describe_aws_error(exc) or str(exc)
        if give_up:
            state.abort(f"Lambda is unreachable: {text}")
        return _HandBack(False, f"invoke failed: {text}", False)
    with state.lock:
        state.unreachable_in_a_row = 0
    try:
        payload: Any = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode("utf-8", "replace")[:300]
    if response.get("FunctionError"):
        if isinstance(payload, dict):
            reason = f"{payload.get('errorType', 'Error')}: {payload.get('errorMessage', '')}"
        else:
            reason = str(payload)
        return _HandBack(False, f"the function failed again: {reason}", False)
    status = int(response.get("StatusCode", 200))
    if status >= 300:
        return _HandBack(False, f"invoke answered status {status}", False)
    if isinstance(payload, dict) and payload.get("status") == "rejected":
        parked = payload.get("parked_as")
        reason = f"{payload.get('error_type', 'Error')}: {payload.get('error', '')}"
        if isinstance(parked, str) and parked:
            state.see(parked)
            return _HandBack(
                False,
                f"rejected again ({reason}); the function re-parked it as message {parked}, "
                "so this older copy was deleted",
                True,
                parked_as=parked,
            )
        return _HandBack(False, f"rejected again: {reason}", False)
    if isinstance(payload, dict) and payload.get("duplicate"):
        return _HandBack(True, "invoked: already processed before (duplicate), nothing done twice", True)
    status_text = payload.get("status") if isinstance(payload, dict) else None
    return _HandBack(True, f"invoked: {status_text or 'ok'}", True)


# ------------------------------------------------------------------------------------------ the pass


def invoke_client(aws: Aws, options: ReplayOptions, endpoint_url: str | None = None) -> Client:
    """The Lambda client for ``invoke`` mode: waits longer than the function may run, never retries.

    An SDK retry after a read timeout would start a second run of a function that may still be
    working; a single attempt plus a read timeout above the function's own makes that impossible.
    """
    return aws.client(
        "lambda",
        read_timeout=options.invoke_read_timeout,
        max_attempts=1,
        pool=options.concurrency + 2,
        endpoint_url=endpoint_url,
    )


def queue_depth(sqs: Client, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) from GetQueueAttributes; TargetError if the queue cannot be read."""
    visible, in_flight, _ = _queue_attributes(sqs, queue_url)
    return visible, in_flight


def _queue_attributes(sqs: Client, queue_url: str) -> tuple[int, int, datetime | None]:
    """Depth, plus SQS's own clock (the response's Date header) to compare SentTimestamps with."""
    try:
        response = sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if "NonExistentQueue" in code or code == "QueueDoesNotExist":
            raise TargetError(
                f"the queue {queue_url} does not exist (check --queue-url / --stack and the region)"
            ) from None
        raise TargetError(describe_aws_error(exc) or f"cannot read the queue {queue_url}: {exc}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise TargetError(describe_aws_error(exc) or f"cannot read the queue {queue_url}: {exc}") from None
    attributes = response.get("Attributes", {})
    server_time: datetime | None = None
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if date:
        with contextlib.suppress(TypeError, ValueError):
            server_time = parsedate_to_datetime(date)
    return (
        int(attributes.get("ApproximateNumberOfMessages", 0)),
        int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        server_time,
    )


def replay(
    sqs: Client,
    queue_url: str,
    options: ReplayOptions,
    *,
    events: Client | None = None,
    bus: str | None = None,
    lambda_client: Client | None = None,
    function: str | None = None,
    progress: Callable[[int], None] | None = None,
    policy: RetryPolicy = REPLAY_RETRY,
) -> ReplayReport:
    """Run one pass over the queue and report per message. See the module docstring for the rules.

    ``events``/``bus`` are needed for ``put-events`` mode, ``lambda_client``/``function`` for
    ``invoke`` (build the Lambda client with a read timeout above the function's timeout and a
    single attempt: :meth:`ReplayOptions.invoke_read_timeout`).
    """
    options.check()
    if not options.dry_run:
        if options.mode == "put-events" and (events is None or not bus):
            raise ValueError("put-events mode needs an EventBridge client and a bus name")
        if options.mode == "invoke" and (lambda_client is None or not function):
            raise ValueError("invoke mode needs a Lambda client and a function name")
    visible, _, server_time = _queue_attributes(sqs, queue_url)
    report = ReplayReport(options.mode, options.dry_run, queue_url, visible)
    state = _Pass(sqs, queue_url, options, report)
    # Messages sent from (about) now on may be failures of events this pass hands back; the Date
    # header has one-second resolution, hence the margin.
    state.recent_after = (server_time or datetime.now(UTC)) - timedelta(seconds=2)
    started = time.monotonic()
    tick = progress or (lambda _: None)
    try:
        if options.mode == "invoke" and not options.dry_run:
            assert lambda_client is not None
            assert function is not None
            _run_invoke(state, lambda_client, function, tick)
        else:
            _run_batches(state, events, bus, policy, tick)
    except KeyboardInterrupt:
        report.interrupted = True
        state.halt("interrupted")
    finally:
        state.stop.set()
        state.release()
        report.seconds = time.monotonic() - started
    return report


def _run_batches(
    state: _Pass, events: Client | None, bus: str | None, policy: RetryPolicy, tick: Callable[[int], None]
) -> None:
    """``concurrency`` loops of receive 10 → one PutEvents → one DeleteMessageBatch (or list, in a dry run)."""

    def worker() -> None:
        while True:
            messages = state.receive(SQS_BATCH)
            if messages is None:
                return
            candidates = state.triage(messages)
            if candidates:
                assert events is not None
                assert bus is not None
                state.wait_for_rate(len(candidates))
                state.finish(_put_events(state, events, bus, candidates, policy))
            tick(len(messages))

    _run_workers(state, [worker] * state.options.concurrency)


def _run_invoke(state: _Pass, lam: Client, function: str, tick: Callable[[int], None]) -> None:
    """One receiver keeps ``concurrency`` synchronous invokes busy; successes are deleted in tens.

    Two messages of one conversation (both copies of a duplicate emission failed) are never handed
    back at the same time: the second waits for the first, then finds the conversation done. Run
    together, the second would find the first in progress and, when the function has too little
    time left to wait for it, fail again.
    """
    slots = threading.Semaphore(state.options.concurrency)
    done: list[tuple[FailedEvent, _HandBack]] = []
    done_lock = threading.Lock()
    last_flush = time.monotonic()
    conversations: dict[str, threading.Lock] = {}

    def flush(force: bool) -> None:
        nonlocal last_flush
        with done_lock:
            if not done or not (force or len(done) >= SQS_BATCH or time.monotonic() - last_flush > 1.0):
                return
            batch = done[:]
            done.clear()
            last_flush = time.monotonic()
        state.finish(batch)
        tick(len(batch))

    def one_at_a_time(conversation_id: str | None) -> contextlib.AbstractContextManager[Any]:
        if conversation_id is None:
            return contextlib.nullcontext()
        with done_lock:
            return conversations.setdefault(conversation_id, threading.Lock())

    def invoke_one(message: FailedEvent) -> None:
        try:
            with one_at_a_time(message.conversation_id):
                result = _invoke(state, lam, function, message)
            with done_lock:
                done.append((message, result))
        finally:
            slots.release()

    def receiver() -> None:
        with ThreadPoolExecutor(max_workers=state.options.concurrency, thread_name_prefix="invoke") as pool:
            futures: list[Future[None]] = []
            while not state.stop.is_set():
                flush(False)
                if not slots.acquire(timeout=0.5):
                    continue
                free = 1
                while free < SQS_BATCH and slots.acquire(blocking=False):
                    free += 1
                messages = state.receive(free)
                if messages is None:
                    for _ in range(free):
                        slots.release()
                    break
                candidates = state.triage(messages)
                tick(len(messages) - len(candidates))
                for _ in range(free - len(candidates)):
                    slots.release()
                for message in candidates:
                    state.wait_for_rate(1)
                    futures.append(pool.submit(invoke_one, message))
                pending: list[Future[None]] = []
                for future in futures:
                    if future.done():
                        future.result()  # a bug in a hand-back surfaces (and stops the pass), never vanishes
                    else:
                        pending.append(future)
                futures = pending
            for future in futures:
                future.result()
        flush(True)

    _run_workers(state, [receiver])


def _run_workers(state: _Pass, workers: Sequence[Callable[[], None]]) -> None:
    """Run the workers; on Ctrl-C stop them after their current batch, so nothing is half done."""
    with ThreadPoolExecutor(max_workers=len(workers), thread_name_prefix="replay") as pool:
        futures = [pool.submit(worker) for worker in workers]
        try:
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    error = future.exception()
                    if error is not None:
                        state.abort(f"{type(error).__name__}: {error}")
        except KeyboardInterrupt:
            state.stop.set()
            wait(futures, timeout=state.options.invoke_read_timeout + 10)
            raise
