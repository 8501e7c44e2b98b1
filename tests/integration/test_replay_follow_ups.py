"""Failed follow-ups (FailedFollowUpsQueue) are recognised and replayed to the FollowUp function.

The FollowUp function's OnFailure records carry a follow-up payload, not a Conversation Ended
event: replay hands it back with ``--mode invoke --function <FollowUpFunctionName>`` and refuses
to put it on the bus.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aftercall_ops.emulator.stack import LocalStack
from aftercall_ops.operations.dlq import RECEIVE_ARGS, classify
from aftercall_ops.operations.replay import ReplayOptions, replay


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    state_dir: Path = tmp_path_factory.mktemp("replay-follow-ups")
    with LocalStack("aftercall-test-fu-replay", {"Stage": "live"}, state_dir=state_dir) as stack:
        yield stack


def _failed_follow_up_record(local: LocalStack, conversation_id: str) -> dict[str, Any]:
    """What Lambda's OnFailure writes after the FollowUp function failed on a scheduled SMS."""
    payload = {
        "aftercall": "follow-up",
        "version": "1",
        "conversation_id": conversation_id,
        "environment": "live",
        "key": "sms",
        "kind": "sms",
        "to": "+14155550123",
        "message": "Your appointment is confirmed for tomorrow at 10:00.",
        "subject": None,
        "scheduled_for": "2026-11-25T10:00:00+00:00",
    }
    return {
        "version": "1.0",
        "timestamp": "2026-11-25T10:00:05.000Z",
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": f"arn:aws:lambda:us-east-1:123456789012:function:{local.outputs['FollowUpFunctionName']}",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3,
        },
        "requestPayload": payload,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorType": "ClientError", "errorMessage": "SNS throttled the SMS"},
    }


def _seed(local: LocalStack, conversation_id: str) -> str:
    queue_url = local.outputs["FailedFollowUpsQueueUrl"]
    record = _failed_follow_up_record(local, conversation_id)
    local.client("sqs").send_message(QueueUrl=queue_url, MessageBody=json.dumps(record))
    return queue_url


def test_a_failed_follow_up_is_recognised_with_its_conversation(local: LocalStack) -> None:
    # Given a failed follow-up in its queue
    queue_url = _seed(local, "conv-fu-recognised")
    sqs = local.client("sqs")
    (message,) = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, **RECEIVE_ARGS)["Messages"]
    sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    # When it is classified
    failed = classify(message)
    # Then it is an OnFailure record of a follow-up, with its conversation and error
    assert failed.shape == "lambda-on-failure"
    assert failed.payload_kind == "follow-up"
    assert failed.conversation_id == "conv-fu-recognised"
    assert "SNS throttled the SMS" in failed.error
    # And its JSON summary carries no phone number
    assert "+14155550123" not in json.dumps(failed.to_json())
    sqs.purge_queue(QueueUrl=queue_url)


def test_put_events_mode_skips_a_follow_up_and_invoke_mode_sends_it_once(local: LocalStack) -> None:
    # Given a failed follow-up
    queue_url = _seed(local, "conv-fu-replayed")
    sqs, function = local.client("sqs"), local.outputs["FollowUpFunctionName"]
    sent_before = local.counts(function)["succeeded"]
    # When replay runs in put-events mode
    skipped = replay(
        sqs,
        queue_url,
        ReplayOptions(mode="put-events", wait_seconds=0),
        events=local.client("events"),
        bus=local.outputs["EventBusName"],
    )
    # Then it is skipped with the reason, and stays
    assert skipped.summary()["skipped"] == 1
    assert "--mode invoke" in (skipped.outcomes[0].detail or "")
    # When replay runs in invoke mode against the FollowUp function
    report = replay(
        sqs,
        queue_url,
        ReplayOptions(mode="invoke", wait_seconds=0),
        lambda_client=local.client("lambda"),
        function=function,
    )
    # Then the follow-up was sent by the real function, and the message is gone
    assert report.summary()["replayed"] == 1
    assert local.counts(function)["succeeded"] == sent_before + 1
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
