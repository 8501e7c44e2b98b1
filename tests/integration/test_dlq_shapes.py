"""The failed-events queue holds three message shapes; replay and status must recognise each.

Messages go through a real SQS queue on the moto server and are received exactly as replay
receives them (all message and system attributes), then classified.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aftercall.errors import InvalidEventError
from aftercall.failures import rejection_record
from aftercall_ops.operations.dlq import RECEIVE_ARGS, FailedEvent, classify
from tests.support.events import conversation_ended
from tests.support.ops import (
    OpsTarget,
    eventbridge_dlq_attributes,
    legacy_dlq_attributes,
    on_failure_record,
)


def _received(target: OpsTarget, body: str, attributes: dict[str, str] | None = None) -> FailedEvent:
    target.send(body, attributes)
    response = target.sqs().receive_message(
        QueueUrl=target.queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1, **RECEIVE_ARGS
    )
    (message,) = response["Messages"]
    return classify(message)


def test_lambda_on_failure_record_is_recognised_with_its_error(ops_target: OpsTarget) -> None:
    # Given an OnFailure record as Lambda writes it after the async retries
    event = conversation_ended()
    record = on_failure_record(event, error_type="ActionsFailedError", message="crm_note failed: 503")
    # When it is received from the queue
    failed = _received(ops_target, json.dumps(record))
    # Then the event is the request payload and the error comes from the response payload
    assert failed.shape == "lambda-on-failure"
    assert failed.event == event
    assert failed.conversation_id == event["detail"]["conversation_id"]
    assert failed.error == "ActionsFailedError: crm_note failed: 503 [RetriesExhausted]"
    assert failed.error_type == "ActionsFailedError"
    assert failed.condition == "RetriesExhausted"
    assert failed.attempts == 3
    assert failed.message_id
    assert failed.receipt_handle


def test_the_handlers_own_rejection_record_is_an_on_failure_record(ops_target: OpsTarget) -> None:
    # Given the record the handler parks for an event that can never succeed
    event = conversation_ended(caller="555-CALL-ME")
    record = rejection_record(event, InvalidEventError("caller: must be E.164"), "req-1", "arn:fn")
    # When it is received
    failed = _received(ops_target, json.dumps(record))
    # Then it is recognised, with the RejectedByFunction condition
    assert failed.shape == "lambda-on-failure"
    assert failed.condition == "RejectedByFunction"
    assert failed.error == "InvalidEventError: caller: must be E.164 [RejectedByFunction]"


def test_on_failure_without_a_response_payload_falls_back_to_the_condition(ops_target: OpsTarget) -> None:
    # Given an OnFailure record for an event that expired before it ran (no response at all)
    record = on_failure_record(conversation_ended(), condition="EventAgeExceeded")
    del record["responsePayload"]
    # When it is received
    failed = _received(ops_target, json.dumps(record))
    # Then the condition is the error
    assert failed.shape == "lambda-on-failure"
    assert failed.error == "EventAgeExceeded"


def test_eventbridge_target_dlq_message_is_recognised_from_its_attributes(ops_target: OpsTarget) -> None:
    # Given a delivery failure as EventBridge writes it: the event as body, the reason as attributes
    event = conversation_ended()
    failed = _received(ops_target, json.dumps(event), eventbridge_dlq_attributes())
    # Then the body is the event and the error and attempts come from the attributes
    assert failed.shape == "eventbridge-dlq"
    assert failed.event == event
    assert failed.conversation_id == event["detail"]["conversation_id"]
    assert failed.error == (
        "SDK_CLIENT_ERROR: Unable to invoke Lambda function: Rate Exceeded. [MaximumRetryAttemptsExhausted]"
    )
    assert failed.attempts == 8


def test_legacy_lambda_dlq_message_is_recognised(ops_target: OpsTarget) -> None:
    # Given a message in the legacy function DLQ shape: the raw event, error in attributes
    event = conversation_ended()
    failed = _received(ops_target, json.dumps(event), legacy_dlq_attributes())
    # Then it is the legacy shape, with the error message from the attributes
    assert failed.shape == "lambda-dlq"
    assert failed.event == event
    assert failed.error == "200: Task timed out after 60.00 seconds"


def test_a_bare_event_without_attributes_is_taken_as_a_legacy_dlq_message(ops_target: OpsTarget) -> None:
    # Given an event body with no attributes at all (e.g. copied into the queue by hand)
    event = conversation_ended()
    failed = _received(ops_target, json.dumps(event))
    # Then it is still replayable, with no recorded error
    assert failed.shape == "lambda-dlq"
    assert failed.event == event
    assert failed.error == "no error recorded"


@pytest.mark.parametrize(
    ("body", "attributes", "problem"),
    [
        ("not json at all", None, "body is not JSON"),
        ("[1, 2, 3]", None, "neither an EventBridge event nor a Lambda OnFailure record"),
        (json.dumps({"hello": "world"}), None, "neither an EventBridge event nor a Lambda OnFailure record"),
        (
            json.dumps({"requestContext": {}, "requestPayload": {"not": "an event"}}),
            None,
            "lambda-on-failure message whose requestPayload is not an EventBridge event",
        ),
        (json.dumps({"x": 1}), eventbridge_dlq_attributes(), "eventbridge-dlq message whose body is not"),
    ],
    ids=["not-json", "json-list", "other-object", "on-failure-without-event", "eventbridge-attrs-without-event"],
)
def test_anything_else_is_unrecognised_with_the_reason(
    ops_target: OpsTarget, body: str, attributes: dict[str, str] | None, problem: str
) -> None:
    # Given a message none of the three writers produces
    failed = _received(ops_target, body, attributes)
    # Then it is unrecognised, says why, and offers no event to replay
    assert failed.shape == "unrecognised"
    assert not failed.recognised
    assert failed.event is None
    assert failed.problem is not None
    assert problem in failed.problem
    assert failed.preview is not None


def test_age_is_measured_from_when_the_message_entered_the_queue() -> None:
    # Given a message sent ten minutes ago (SentTimestamp in milliseconds)
    sent = datetime.now(UTC) - timedelta(minutes=10)
    message: dict[str, Any] = {
        "MessageId": "m-1",
        "ReceiptHandle": "rh-1",
        "Body": json.dumps(on_failure_record(conversation_ended())),
        "Attributes": {"SentTimestamp": str(int(sent.timestamp() * 1000)), "ApproximateReceiveCount": "2"},
    }
    # When it is classified
    failed = classify(message, now=sent + timedelta(minutes=10))
    # Then its age and receive count are known
    assert failed.age_seconds == pytest.approx(600, abs=1)
    assert failed.receive_count == 2


def test_the_json_summary_leaves_out_the_event_itself() -> None:
    # Given a recognised message whose event holds personal data
    message = {"MessageId": "m", "ReceiptHandle": "r", "Body": json.dumps(on_failure_record(conversation_ended()))}
    # When it is summarised for --json output
    summary = classify(message).to_json()
    # Then the caller's number is not in it
    assert "+14155550123" not in json.dumps(summary)
    assert summary["shape"] == "lambda-on-failure"
