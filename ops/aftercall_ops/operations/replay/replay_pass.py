"""One replay pass's shared state (:class:`ReplayPass`): receiving without seeing a message twice, triage,
the PutEvents calls in flight, recording outcomes. Its SQS side (holding, deleting, releasing
messages) is :mod:`held`; the hand-back itself is :mod:`hand_back`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import botocore.exceptions

from aftercall_ops.operations.dlq import RECEIVE_ARGS, FailedEvent, classify
from aftercall_ops.operations.emit import EntryOutcome
from aftercall_ops.operations.replay.held import HeldMessages
from aftercall_ops.operations.replay.report import (
    MAX_CONSECUTIVE_UNREACHABLE,
    SQS_BATCH,
    Action,
    MessageOutcome,
    ReplayOptions,
    ReplayReport,
)
from aftercall_ops.operations.targets import Client, describe_aws_error


class ReplayRateLimiter:
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
class HandBack:
    ok: bool
    detail: str
    delete: bool
    new_event_id: str | None = None
    parked_as: str | None = None


class ReplayPass:
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
        self.held = HeldMessages(sqs, queue_url, self.lock)
        self.budget = options.limit
        self.receives = 0
        self.max_receives = 2 * report.depth_at_start + 20 * options.concurrency + 20
        self.deadline = time.monotonic() + options.max_seconds
        self.rate = ReplayRateLimiter(options.rate) if options.rate else None
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
                self.held.hold(message)  # every undeleted message is released at the end
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
            return event_id_of(message) in self.handed_back_event_ids

    def note_batch(self, failures: Sequence[EntryOutcome], size: int) -> None:
        """Stop the pass when whole batches keep failing the same way: the bus is not answering."""
        codes = {outcome.error_code for outcome in failures}
        with self.lock:
            if failures and len(failures) == size and len(codes) == 1:
                self.unreachable_in_a_row += 1
            else:
                self.unreachable_in_a_row = 0
            give_up = self.unreachable_in_a_row >= MAX_CONSECUTIVE_UNREACHABLE
        if give_up:
            last = failures[-1]
            self.abort(
                f"PutEvents failed for {MAX_CONSECUTIVE_UNREACHABLE} whole batches in a row "
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
    def finish(self, results: Sequence[tuple[FailedEvent, HandBack]]) -> None:
        """Delete the messages handed back successfully (batched), then record every outcome."""
        to_delete = [message for message, result in results if result.delete]
        delete_errors = self.held.delete(to_delete)
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


def event_id_of(message: FailedEvent) -> str | None:
    if message.event is None:
        return None
    event_id = message.event.get("id")
    return event_id if isinstance(event_id, str) else None
