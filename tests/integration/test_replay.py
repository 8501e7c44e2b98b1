"""``aftercall replay``'s pass over the failed-events queue, against the moto server.

Hand-back targets are real peers on loopback: the bus on moto (a rule copies what arrives into a
"delivered" queue; another rule can act as a consumer that always fails), a Lambda ``Invoke``
endpoint running a Python function, and a proxy that stops answering mid-replay. The full loop
through the real handler runs on the local stack in ``test_cli.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aftercall_ops.emulator.template import PROJECT_ROOT
from aftercall_ops.operations.replay import ReplayOptions, ReplayReport, replay
from tests.support.events import conversation_ended
from tests.support.ops import (
    CallCounter,
    FaultProxy,
    LambdaEndpoint,
    LambdaFunction,
    OpsTarget,
    eventbridge_dlq_attributes,
    legacy_dlq_attributes,
    on_failure_record,
)


def _put_events(target: OpsTarget, **options: Any) -> ReplayReport:
    return replay(
        target.sqs(),
        target.queue_url,
        ReplayOptions(mode="put-events", **options),
        events=target.events(),
        bus=target.bus,
    )


def _invoke(target: OpsTarget, endpoint: LambdaEndpoint, read_timeout: float = 10.0, **options: Any) -> ReplayReport:
    return replay(
        target.sqs(),
        target.queue_url,
        ReplayOptions(mode="invoke", **options),
        lambda_client=endpoint.client(read_timeout),
        function="end-handler",
    )


def _queue_conversations(target: OpsTarget) -> list[str]:
    """Conversation ids of every message now in the failed-events queue (read, then made visible again)."""
    sqs = target.sqs()
    found: list[str] = []
    handles: list[str] = []
    for _ in range(100):
        batch = sqs.receive_message(
            QueueUrl=target.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=30
        ).get("Messages", [])
        if not batch:
            break
        for message in batch:
            body = json.loads(message["Body"])
            event = body.get("requestPayload", body)
            found.append(event["detail"]["conversation_id"])
            handles.append(message["ReceiptHandle"])
    for handle in handles:
        sqs.change_message_visibility(QueueUrl=target.queue_url, ReceiptHandle=handle, VisibilityTimeout=0)
    return found


@pytest.fixture
def processed() -> Iterator[LambdaEndpoint]:
    """A function that processes every event it is given."""
    with LambdaEndpoint(lambda event: ({"status": "processed"}, None)) as endpoint:
        yield endpoint


def _failing(event: dict[str, Any]) -> tuple[Any, str | None]:
    return {"errorType": "ActionsFailedError", "errorMessage": "crm_note failed: still down"}, "Unhandled"


# ------------------------------------------------------------------------------------------ put-events


def test_put_events_mode_hands_every_event_back_and_deletes_it(ops_target: OpsTarget) -> None:
    # Given 23 OnFailure records in the failed-events queue
    events = ops_target.seed_on_failure(23)
    counter = CallCounter()
    sqs, bus_client = counter.attach(ops_target.sqs()), counter.attach(ops_target.events())
    # When they are replayed onto the bus
    report = replay(
        sqs,
        ops_target.queue_url,
        ReplayOptions(mode="put-events", concurrency=3),
        events=bus_client,
        bus=ops_target.bus,
    )
    # Then each was put back once, with a new event id and the same detail, and the queue is empty
    assert report.ok
    assert report.summary() == {"replayed": 23, "failed_again": 0, "skipped": 0, "unrecognised": 0}
    delivered = ops_target.delivered()
    assert sorted(e["detail"]["conversation_id"] for e in delivered) == sorted(
        e["detail"]["conversation_id"] for e in events
    )
    assert not {e["id"] for e in delivered} & {e["id"] for e in events}
    assert ops_target.depth() == (0, 0)
    # And the work was batched: no single-message deletes, one PutEvents per received batch at most
    assert counter["DeleteMessage"] == 0
    assert counter["PutEvents"] <= counter["ReceiveMessage"]
    # (one DeleteMessageBatch per PutEvents batch; a batch holding a message that two overlapping
    # receives both returned, as SQS's at-least-once delivery allows, deletes its extra receipt in
    # a second call)
    assert counter["PutEvents"] <= counter["DeleteMessageBatch"] <= 2 * counter["PutEvents"]


def test_a_dry_run_lists_everything_and_changes_nothing(ops_target: OpsTarget) -> None:
    # Given five OnFailure records and one message nobody can read
    ops_target.seed_on_failure(5)
    ops_target.send("garbage")
    # When a dry run goes over the queue
    report = _put_events(ops_target, dry_run=True)
    # Then it lists what it would replay and what it cannot, with shape, error and age
    assert report.summary() == {"replayed": 0, "failed_again": 0, "skipped": 0, "unrecognised": 1, "would_replay": 5}
    listed = [o for o in report.outcomes if o.action == "would-replay"]
    assert {o.shape for o in listed} == {"lambda-on-failure"}
    assert all(o.conversation_id and o.error and o.age_seconds is not None for o in listed)
    # And nothing changed: nothing delivered, every message still there and visible at once
    assert ops_target.delivered() == []
    assert ops_target.depth() == (6, 0)


def test_filters_pick_messages_and_leave_the_rest_visible(ops_target: OpsTarget) -> None:
    # Given records for three conversations, one of them with a different error
    first, second = ops_target.seed_on_failure(2)
    third = conversation_ended()
    ops_target.send(json.dumps(on_failure_record(third, error_type="EndFunctionError", message="KeyError: 'x'")))
    # When only one conversation is replayed, then only the EndFunctionError
    by_id = _put_events(ops_target, conversation_ids=frozenset({first["detail"]["conversation_id"]}))
    by_error = _put_events(ops_target, error_contains="endfunctionerror")
    # Then each replayed exactly its match and skipped the others, which stay in the queue
    assert by_id.summary()["replayed"] == 1
    assert by_id.summary()["skipped"] == 2
    assert {o.detail for o in by_id.outcomes if o.action == "skipped"} == {"filtered out by --conversation-id"}
    assert [o.conversation_id for o in by_error.outcomes if o.action == "replayed"] == [
        third["detail"]["conversation_id"]
    ]
    assert _queue_conversations(ops_target) == [second["detail"]["conversation_id"]]


def test_limit_hands_back_at_most_n_messages(ops_target: OpsTarget) -> None:
    ops_target.seed_on_failure(7)
    report = _put_events(ops_target, limit=3, concurrency=2)
    assert report.summary()["replayed"] == 3
    assert report.stopped == "--limit 3 reached"
    assert ops_target.depth() == (4, 0)


def test_a_poison_message_is_handed_back_once_per_pass_and_stays(ops_target: OpsTarget) -> None:
    # Given a consumer on the bus that fails every event at once, writing a new OnFailure record
    ops_target.add_poison_rule()
    events = ops_target.seed_on_failure(3)
    ids = sorted(e["detail"]["conversation_id"] for e in events)
    # When two passes run
    first = _put_events(ops_target)
    second = _put_events(ops_target)
    # Then each pass handed every conversation back exactly once, and ended by itself
    for report in (first, second):
        assert sorted(o.conversation_id or "" for o in report.outcomes if o.action == "replayed") == ids
        assert all(
            o.detail and "handed back earlier in this pass" in o.detail
            for o in report.outcomes
            if o.action == "skipped"
        )
    # And the failures are back in the queue, one per conversation, visible
    assert sorted(_queue_conversations(ops_target)) == ids


def test_an_unrecognised_message_is_reported_and_not_deleted(ops_target: OpsTarget) -> None:
    ops_target.seed_on_failure(1)
    garbage_id = ops_target.send('{"what": "is this"}')
    report = _put_events(ops_target)
    (unrecognised,) = [o for o in report.outcomes if o.action == "unrecognised"]
    assert unrecognised.message_id == garbage_id
    assert unrecognised.detail == "neither an EventBridge event nor a Lambda OnFailure record"
    assert not report.ok
    assert ops_target.depth() == (1, 0)


@pytest.mark.parametrize("mode", ["put-events", "invoke"])
def test_eventbridge_dlq_and_legacy_messages_are_replayed_in_both_modes(
    ops_target: OpsTarget, processed: LambdaEndpoint, mode: str
) -> None:
    # Given one message of each shape, seeded by hand (moto never fails a delivery)
    delivery_failed, legacy = conversation_ended(), conversation_ended()
    ops_target.send(json.dumps(delivery_failed), eventbridge_dlq_attributes())
    ops_target.send(json.dumps(legacy), legacy_dlq_attributes())
    (on_failure,) = ops_target.seed_on_failure(1)
    # When they are replayed
    report = _put_events(ops_target) if mode == "put-events" else _invoke(ops_target, processed)
    # Then all three shapes were recognised and handed back, and the queue is empty
    assert sorted(o.shape for o in report.outcomes if o.action == "replayed") == [
        "eventbridge-dlq",
        "lambda-dlq",
        "lambda-on-failure",
    ]
    expected = {e["detail"]["conversation_id"] for e in (delivery_failed, legacy, on_failure)}
    received = ops_target.delivered() if mode == "put-events" else processed.calls
    assert {e["detail"]["conversation_id"] for e in received} == expected
    assert ops_target.depth() == (0, 0)


# ------------------------------------------------------------------------------------------ invoke


def test_invoke_mode_calls_the_function_with_the_original_event(
    ops_target: OpsTarget, processed: LambdaEndpoint
) -> None:
    events = ops_target.seed_on_failure(12)
    report = _invoke(ops_target, processed, concurrency=3)
    assert report.summary()["replayed"] == 12
    assert sorted(e["id"] for e in processed.calls) == sorted(e["id"] for e in events)  # same event, same id
    assert ops_target.depth() == (0, 0)


def test_a_function_that_fails_again_leaves_its_messages_visible(ops_target: OpsTarget) -> None:
    # Given a function that still fails
    ops_target.seed_on_failure(4)
    with LambdaEndpoint(_failing) as endpoint:
        # When the queue is replayed by invoking it
        report = _invoke(ops_target, endpoint, concurrency=2)
    # Then every message was tried once, reported with the new error, and is visible again at once
    assert len(endpoint.calls) == 4
    assert report.summary()["failed_again"] == 4
    assert {o.detail for o in report.outcomes} == {
        "the function failed again: ActionsFailedError: crm_note failed: still down"
    }
    assert not report.ok
    assert ops_target.depth() == (4, 0)


def test_a_slow_invoke_is_not_sent_twice(ops_target: OpsTarget) -> None:
    # Given a function slower than the client's read timeout
    ops_target.seed_on_failure(1)
    with LambdaEndpoint(lambda event: ({"status": "processed"}, None)) as endpoint:
        endpoint.delay = 3.0
        # When it is replayed with a one-attempt client that gives up after one second
        report = _invoke(ops_target, endpoint, read_timeout=1.0)
        calls = len(endpoint.calls)
    # Then it was invoked exactly once, reported as failed again, and kept
    assert calls == 1
    (outcome,) = report.outcomes
    assert outcome.action == "failed-again"
    assert outcome.detail is not None
    assert "not retried" in outcome.detail
    assert ops_target.depth() == (1, 0)


def test_two_records_of_one_conversation_are_never_handed_back_at_the_same_time(ops_target: OpsTarget) -> None:
    # Given both copies of a duplicate emission in the queue among others, and a function that, like
    # the End function with too little time left to wait, fails a copy that finds its twin running
    (twice,) = ops_target.seed_on_failure(1)
    ops_target.send(json.dumps(on_failure_record(twice)))
    ops_target.seed_on_failure(4)
    running: set[str] = set()
    overlaps: list[str] = []
    lock = threading.Lock()

    def end_handler(event: dict[str, Any]) -> tuple[Any, str | None]:
        conversation_id = event["detail"]["conversation_id"]
        with lock:
            if conversation_id in running:
                overlaps.append(conversation_id)
                return {"errorType": "IdempotencyAlreadyInProgressError", "errorMessage": "in progress"}, "Unhandled"
            running.add(conversation_id)
        time.sleep(0.3)
        with lock:
            running.discard(conversation_id)
        return {"status": "processed"}, None

    with LambdaEndpoint(end_handler) as endpoint:
        # When one invoke pass runs with room for all of them at once
        report = _invoke(ops_target, endpoint, concurrency=8)
    # Then the two copies ran one after the other: both replayed, nothing failed again, the queue is empty
    assert overlaps == []
    assert report.summary() == {"replayed": 6, "failed_again": 0, "skipped": 0, "unrecognised": 0}
    assert [call["detail"]["conversation_id"] for call in endpoint.calls].count(twice["detail"]["conversation_id"]) == 2
    assert ops_target.depth() == (0, 0)


def test_a_rejected_event_is_re_parked_by_the_function_and_not_replayed_again(ops_target: OpsTarget) -> None:
    # Given an invalid event, and a function that parks it again (as the handler does) and says so
    (event,) = ops_target.seed_on_failure(1, caller="555-CALL-ME")
    sqs = ops_target.sqs()

    def rejects(received: dict[str, Any]) -> tuple[Any, str | None]:
        record = on_failure_record(received, error_type="InvalidEventError", condition="RejectedByFunction")
        parked = sqs.send_message(QueueUrl=ops_target.queue_url, MessageBody=json.dumps(record))["MessageId"]
        return {"status": "rejected", "error_type": "InvalidEventError", "error": "caller", "parked_as": parked}, None

    with LambdaEndpoint(rejects) as endpoint:
        # When it is replayed
        report = _invoke(ops_target, endpoint)
    # Then it was invoked once; the old copy is gone and the new record stays for the operator
    assert len(endpoint.calls) == 1
    (outcome,) = [o for o in report.outcomes if o.action != "skipped"]  # the pass may also see the new record
    assert outcome.action == "failed-again"
    assert outcome.detail is not None
    assert "re-parked" in outcome.detail
    assert _queue_conversations(ops_target) == [event["detail"]["conversation_id"]]


# ------------------------------------------------------------------------------------------ interruptions


def test_a_hand_back_target_that_stops_answering_loses_nothing(ops_target: OpsTarget, fault_proxy: FaultProxy) -> None:
    # Given 60 records and a bus that stops answering after two PutEvents calls
    events = ops_target.seed_on_failure(60)
    fault_proxy.stop_after(2)
    # When a replay runs through it
    report = replay(
        ops_target.sqs(),
        ops_target.queue_url,
        ReplayOptions(mode="put-events", concurrency=2),
        events=ops_target.events(fault_proxy.url),
        bus=ops_target.bus,
    )
    # Then the replay stopped and said why
    assert report.aborted is not None
    assert "PutEvents failed for 3 whole batches in a row (ServiceUnavailable" in report.aborted
    # And every conversation is either delivered (and deleted) or still in the queue, visible
    delivered = {e["detail"]["conversation_id"] for e in ops_target.delivered()}
    remaining = set(_queue_conversations(ops_target))
    assert delivered | remaining == {e["detail"]["conversation_id"] for e in events}
    assert not delivered & remaining
    assert len(delivered) == report.summary()["replayed"]
    assert ops_target.depth()[1] == 0


def test_a_replay_killed_midway_loses_nothing(ops_target: OpsTarget) -> None:
    # Given 60 records and a replay process, slowed down by --rate so it can be killed midway
    events = ops_target.seed_on_failure(60)
    everything = {e["detail"]["conversation_id"] for e in events}
    command = [
        sys.executable,
        "-m",
        "aftercall_ops.cli",
        "replay",
        "--queue-url",
        ops_target.queue_url,
        "--bus",
        ops_target.bus,
        "--mode",
        "put-events",
        "--concurrency",
        "1",
        "--rate",
        "20",
        "--visibility-timeout",
        "2",
    ]
    env = {**os.environ, "AWS_ENDPOINT_URL": ops_target.endpoint, "PYTHONPATH": _pythonpath()}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    delivered: set[str] = set()
    try:
        # When it is killed (SIGKILL: no cleanup at all) once some events went back on the bus
        for _ in range(600):  # bounded: about a minute even on a slow, loaded machine
            delivered |= {e["detail"]["conversation_id"] for e in ops_target.delivered()}
            if len(delivered) >= 10 or process.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert 10 <= len(delivered) < 60, "the replay should have been killed midway"
    # Then, once the visibility timeout has passed, everything not delivered is in the queue again
    for _ in range(100):
        if ops_target.depth()[1] == 0:
            break
        time.sleep(0.1)
    remaining = set(_queue_conversations(ops_target))
    assert delivered | remaining == everything
    # And a second replay finishes the job
    report = _put_events(ops_target)
    assert report.ok
    delivered |= {e["detail"]["conversation_id"] for e in ops_target.delivered()}
    assert delivered == everything
    assert ops_target.depth() == (0, 0)


def _pythonpath() -> str:
    paths = [str(PROJECT_ROOT / "layers" / "aftercall"), str(PROJECT_ROOT / "ops"), str(PROJECT_ROOT)]
    return os.pathsep.join(paths + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))


def test_bad_options_are_refused_with_specific_messages(ops_target: OpsTarget) -> None:
    for options, message in [
        (ReplayOptions(limit=0), "--limit must be at least 1"),
        (ReplayOptions(concurrency=0), "--concurrency must be between 1 and 64"),
        (ReplayOptions(rate=0), "--rate must be a positive number"),
        (ReplayOptions(error_contains=" "), "--error-contains must not be empty"),
    ]:
        with pytest.raises(ValueError, match=message):
            replay(ops_target.sqs(), ops_target.queue_url, options, events=ops_target.events(), bus=ops_target.bus)


def test_the_functions_unused_by_the_type_checker_stay_typed() -> None:
    function: LambdaFunction = _failing
    assert function({})[1] == "Unhandled"
