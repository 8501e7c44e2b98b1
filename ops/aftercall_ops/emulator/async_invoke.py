"""Lambda's asynchronous invocation, played for the EndHandler: the rule delivers to an SQS "delivery"
queue (moto cannot run Lambda); this polls it and gives each event what Lambda gives it: attempts
in a free environment, retries after delays, the maximum event age, and at the end an ``OnFailure``
record in the failed-events queue in the exact AWS shape, written before the delivery message is
deleted (so nothing is lost in between).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from aftercall_ops.emulator.account import now_iso
from aftercall_ops.emulator.pool import AsyncEvent, FunctionPool, Job, SyncRequest
from aftercall_ops.emulator.provisioner import DELIVERY_VISIBILITY_SECONDS, RECEIVE_WAIT_SECONDS
from aftercall_ops.emulator.runtime import ExecutionEnvironment, describe_result

log = logging.getLogger("aftercall_ops.emulator")


class AsyncInvoker:
    """The delivery queue's poller and what happens to each event it takes, through all its attempts."""

    def __init__(
        self,
        sqs: Any,
        *,
        delivery_queue_url: str,
        failed_events_queue_url: str,
        function_arn: str,
        max_retries: int,
        retry_delays: tuple[float, ...],
        max_event_age: float,
        workers: int,
        stopping: threading.Event,
        label: str,
    ) -> None:
        self._sqs = sqs
        self.delivery_queue_url = delivery_queue_url
        self.failed_events_queue_url = failed_events_queue_url
        self.function_arn = function_arn
        self.max_retries = max_retries
        self.retry_delays = retry_delays
        self.max_event_age = max_event_age
        self.workers = workers
        self._stopping = stopping
        self._label = label
        self._poller: threading.Thread | None = None
        self._held_lock = threading.Lock()
        #: Held by the poller from a receive until its messages are held, so :meth:`in_flight` sees
        #: every message either in the delivery queue or held, never between the two.
        self._intake_lock = threading.Lock()
        self._returning: dict[str, tuple[Any, float]] = {}  # message id -> (payload, visible again at)
        self._held: dict[str, AsyncEvent] = {}  # message id -> event being worked on

    def stop(self) -> None:
        """Wait for the poller (the stack set ``stopping``), then forget what was held: it stays queued."""
        if self._poller is not None:
            self._poller.join(timeout=15)
            self._poller = None
        with self._held_lock:
            self._held.clear()
            self._returning.clear()

    def start(self, pool: FunctionPool) -> None:
        """Feed ``pool`` (the EndHandler's) from the delivery queue until the stack stops."""
        self._poller = threading.Thread(target=self._poll_loop, args=(pool,), name=f"{self._label}-poller", daemon=True)
        self._poller.start()

    def _poll_loop(self, pool: FunctionPool) -> None:
        """Long-poll the delivery queue while there is room; keep held messages invisible."""
        sqs = self._sqs
        while not self._stopping.is_set():
            self._renew_visibility()
            if pool.due_backlog() >= self.workers:  # every environment has work waiting: let them catch up
                self._stopping.wait(0.05)
                continue
            failed = False
            with self._intake_lock:  # see in_flight(): a received message is held before the lock is let go
                try:
                    answer = sqs.receive_message(
                        QueueUrl=self.delivery_queue_url,
                        MaxNumberOfMessages=10,
                        WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
                        VisibilityTimeout=DELIVERY_VISIBILITY_SECONDS,
                        AttributeNames=["SentTimestamp"],
                    )
                except (ClientError, BotoCoreError) as exc:
                    answer, failed = {}, True
                    if not self._stopping.is_set():
                        log.warning("could not read the delivery queue (%s); trying again", exc)
                for message in answer.get("Messages", []):
                    self._accept(message, pool)
            if failed:
                self._stopping.wait(0.5)

    def _accept(self, message: Mapping[str, Any], pool: FunctionPool) -> None:
        message_id = str(message["MessageId"])
        with self._held_lock:
            known = self._held.get(message_id)
            if known is not None:  # seen again after its visibility lapsed: keep the one job, new handle
                known.receipt_handle = str(message["ReceiptHandle"])
                known.invisible_until = time.monotonic() + DELIVERY_VISIBILITY_SECONDS
                return
        try:
            payload: Any = json.loads(message["Body"])
        except ValueError:
            payload = message["Body"]  # the handler refuses (and parks) what is not an event
        if isinstance(payload, dict) and "detail-type" in payload:
            payload.pop("ingestion-time", None)  # moto's internal field, not part of EventBridge's event
        event = AsyncEvent(
            payload=payload,
            message_id=message_id,
            receipt_handle=str(message["ReceiptHandle"]),
            sent_ms=int(message.get("Attributes", {}).get("SentTimestamp") or time.time() * 1000),
            invisible_until=time.monotonic() + DELIVERY_VISIBILITY_SECONDS,
        )
        with self._held_lock:
            self._held[message_id] = event
        pool.push(time.monotonic(), event)

    def _renew_visibility(self) -> None:
        with self._held_lock:
            now = time.monotonic()
            due = [e for e in self._held.values() if e.invisible_until - now < DELIVERY_VISIBILITY_SECONDS / 2]
        for event in due:
            try:
                self._sqs.change_message_visibility(
                    QueueUrl=self.delivery_queue_url,
                    ReceiptHandle=event.receipt_handle,
                    VisibilityTimeout=DELIVERY_VISIBILITY_SECONDS,
                )
                event.invisible_until = time.monotonic() + DELIVERY_VISIBILITY_SECONDS
            except (ClientError, BotoCoreError) as exc:
                log.warning("could not keep the message for %s invisible: %s", event.label, exc)

    def run_job(self, pool: FunctionPool, job: Job, environment: ExecutionEnvironment) -> None:
        if isinstance(job, SyncRequest):
            outcome = pool.execute(environment, job.payload, job.request_id)
            if outcome is None:
                job.future.set_exception(RuntimeError("the local stack stopped during the invocation"))
            else:
                job.future.set_result(outcome)
        else:
            self._run_async(pool, job, environment)

    def recover(self, job: Job, exc: Exception) -> None:
        """After a bug of ours while running ``job``: fail the caller, or hand the event back to the queue."""
        if isinstance(job, SyncRequest):
            if not job.future.done():
                job.future.set_exception(exc)
        else:
            self._release(job, delay=5)

    def _run_async(self, pool: FunctionPool, event: AsyncEvent, environment: ExecutionEnvironment) -> None:
        age = time.time() - event.sent_ms / 1000
        if age > self.max_event_age:
            log.error("%s: %.0f s old, over MaximumEventAgeInSeconds (%.0f)", event.label, age, self.max_event_age)
            self._give_up(pool, event, "EventAgeExceeded")
            return
        event.attempts += 1
        outcome = pool.execute(environment, event.payload, event.request_id)
        if outcome is None:  # stopping: the message stays in the delivery queue, nothing is lost
            return
        if outcome.ok:
            log.info(
                "%s: %s in %.2f s (attempt %d)",
                event.label,
                describe_result(outcome.result),
                outcome.seconds,
                event.attempts,
            )
            self._finish(event)
            return
        event.last_failure = outcome
        total = 1 + self.max_retries
        if event.attempts <= self.max_retries:
            delays = self.retry_delays or (0.0,)
            delay = delays[min(event.attempts - 1, len(delays) - 1)]
            log.warning(
                "%s: attempt %d of %d failed (%s); retrying in %g s",
                event.label,
                event.attempts,
                total,
                outcome.error_summary,
                delay,
            )
            event.after_invocation = pool.newest_running()
            pool.push(time.monotonic() + delay, event)
        else:
            log.error("%s: attempt %d of %d failed (%s)", event.label, event.attempts, total, outcome.error_summary)
            self._give_up(pool, event, "RetriesExhausted")

    def on_failure_record(self, event: AsyncEvent, condition: str) -> dict[str, Any]:
        """Lambda's ``OnFailure`` destination record, field for field."""
        record: dict[str, Any] = {
            "version": "1.0",
            "timestamp": now_iso(),
            "requestContext": {
                "requestId": event.request_id,
                "functionArn": f"{self.function_arn}:$LATEST",
                "condition": condition,
                "approximateInvokeCount": event.attempts,
            },
            "requestPayload": event.payload,
        }
        if event.last_failure is not None and event.last_failure.error is not None:
            record["responseContext"] = {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
            record["responsePayload"] = event.last_failure.error
        return record

    def _give_up(self, pool: FunctionPool, event: AsyncEvent, condition: str) -> None:
        """Write the OnFailure record, then (only then) delete the delivery message."""
        record = self.on_failure_record(event, condition)
        try:
            self._sqs.send_message(QueueUrl=self.failed_events_queue_url, MessageBody=json.dumps(record))
        except (ClientError, BotoCoreError) as exc:
            pool.count("dlq_write_failures")
            log.error(
                "%s: could not write the OnFailure record (%s); the event stays in the delivery queue and runs again",
                event.label,
                exc,
            )
            self._release(event, delay=5)
            return
        pool.count("sent_to_dlq")
        log.error("%s: sent to the failed-events queue (%s, %d attempts)", event.label, condition, event.attempts)
        self._finish(event)

    def _finish(self, event: AsyncEvent) -> None:
        try:
            self._sqs.delete_message(QueueUrl=self.delivery_queue_url, ReceiptHandle=event.receipt_handle)
        except (ClientError, BotoCoreError) as exc:
            log.warning(
                "%s: could not delete the delivery message (%s); it will run again (idempotent)", event.label, exc
            )
        with self._held_lock:
            self._held.pop(event.message_id, None)

    def _release(self, event: AsyncEvent, delay: int) -> None:
        with self._held_lock:
            self._held.pop(event.message_id, None)
            # Invisible in the queue and held by nobody until it reappears: in_flight() still counts it.
            self._returning[event.message_id] = (event.payload, time.monotonic() + delay)
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self.delivery_queue_url, ReceiptHandle=event.receipt_handle, VisibilityTimeout=delay
            )
        except (ClientError, BotoCoreError) as exc:
            with self._held_lock:
                self._returning[event.message_id] = (event.payload, event.invisible_until)
            log.warning(
                "%s: could not release the delivery message (%s); it reappears after its timeout", event.label, exc
            )

    # --- the public API the CLI and the tests use ------------------------------------------------------

    def in_flight(self) -> list[Any]:
        """Every event handed to the EndHandler and not finished yet, as a snapshot.

        That is: waiting in the delivery queue (peeked: received, then made visible again at once),
        or held by the dispatcher (waiting for an environment or a retry, or running). Taken while
        the poller is not between a receive and holding what it received, so an event moving on
        is seen at least once; read the outcomes (processed, failed-events queue) after this to
        account for every event.
        """
        sqs = self._sqs
        with self._intake_lock:
            peeked: dict[str, Mapping[str, Any]] = {}
            for _ in range(10_000):  # bounded: each receive brings new messages or ends the loop
                batch = sqs.receive_message(
                    QueueUrl=self.delivery_queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=0,
                    VisibilityTimeout=DELIVERY_VISIBILITY_SECONDS,
                ).get("Messages", [])
                fresh = [message for message in batch if message["MessageId"] not in peeked]
                peeked.update((message["MessageId"], message) for message in batch)
                if not fresh:
                    break
            handles = [str(message["ReceiptHandle"]) for message in peeked.values()]
            for start in range(0, len(handles), 10):
                sqs.change_message_visibility_batch(
                    QueueUrl=self.delivery_queue_url,
                    Entries=[
                        {"Id": str(index), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                        for index, handle in enumerate(handles[start : start + 10])
                    ],
                )
            with self._held_lock:
                held = [event.payload for event in self._held.values()]
                now = time.monotonic()
                for message_id, (payload, visible_at) in list(self._returning.items()):
                    if visible_at + 1 < now:  # visible again for a while: the peek or the poller has it
                        del self._returning[message_id]
                    else:
                        held.append(payload)
        waiting = []
        for message in peeked.values():
            try:
                waiting.append(json.loads(message["Body"]))
            except ValueError:
                waiting.append(message["Body"])
        return waiting + held

    def queue_pending(self, busy: bool) -> list[str]:
        """What the delivery queue still holds, in words; its in-flight messages only when nothing else is
        ``busy`` (a message being worked on is in flight until its job ends)."""
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self.delivery_queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        visible = int(attributes.get("ApproximateNumberOfMessages", 0))
        invisible = int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0))
        pending = []
        if visible:
            pending.append(f"{visible} message(s) in the delivery queue")
        if invisible and not busy and not pending:
            pending.append(f"{invisible} delivery message(s) not yet deleted")
        return pending
