"""The pass itself: ``concurrency`` receive → PutEvents → delete loops, or one receiver feeding
``concurrency`` synchronous invokes; Ctrl-C stops them after their current batch."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import botocore.exceptions

from aftercall_ops.operations.dlq import FailedEvent
from aftercall_ops.operations.emit import RetryPolicy
from aftercall_ops.operations.replay.hand_back import invoke, put_events
from aftercall_ops.operations.replay.replay_pass import HandBack, ReplayPass
from aftercall_ops.operations.replay.report import REPLAY_RETRY, SQS_BATCH, ReplayOptions, ReplayReport
from aftercall_ops.operations.targets import Aws, Client, TargetError, describe_aws_error


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
    state = ReplayPass(sqs, queue_url, options, report)
    # Messages sent from (about) now on may be failures of events this pass hands back; the Date
    # header has one-second resolution, hence the margin.
    state.recent_after = (server_time or datetime.now(UTC)) - timedelta(seconds=2)
    started = time.monotonic()
    tick = progress or (lambda _: None)
    try:
        if options.mode == "invoke" and not options.dry_run:
            assert lambda_client is not None
            assert function is not None
            _runinvoke(state, lambda_client, function, tick)
        else:
            _run_batches(state, events, bus, policy, tick)
    except KeyboardInterrupt:
        report.interrupted = True
        state.halt("interrupted")
    finally:
        state.stop.set()
        state.held.release(report, options.visibility)
        report.seconds = time.monotonic() - started
    return report


def _run_batches(
    state: ReplayPass, events: Client | None, bus: str | None, policy: RetryPolicy, tick: Callable[[int], None]
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
                state.finish(put_events(state, events, bus, candidates, policy))
            tick(len(messages))

    _run_workers(state, [worker] * state.options.concurrency)


def _runinvoke(state: ReplayPass, lam: Client, function: str, tick: Callable[[int], None]) -> None:
    """One receiver keeps ``concurrency`` synchronous invokes busy; successes are deleted in tens.

    Two messages of one conversation (both copies of a duplicate emission failed) are never handed
    back at the same time: the second waits for the first, then finds the conversation done. Run
    together, the second would find the first in progress and, when the function has too little
    time left to wait for it, fail again.
    """
    slots = threading.Semaphore(state.options.concurrency)
    done: list[tuple[FailedEvent, HandBack]] = []
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
                result = invoke(state, lam, function, message)
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


def _run_workers(state: ReplayPass, workers: Sequence[Callable[[], None]]) -> None:
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
