"""Parking events that can never succeed, straight into the failed-events queue.

An invalid event or a conflicting duplicate fails the same way on every retry, so instead of
letting Lambda retry it twice over three minutes, the handler writes it to the failed-events
queue at once, in the same shape as Lambda's ``OnFailure`` record (``condition``
``RejectedByFunction``), and returns. ``aftercall replay`` and ``aftercall status`` read it like
any other failure. If parking itself fails, the handler raises instead and Lambda's own
retry/``OnFailure`` path keeps the event: it is never lost either way.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aftercall import aws

REJECTED_CONDITION = "RejectedByFunction"
SQS_MAX_BYTES = 256 * 1024


def rejection_record(event: Any, error: BaseException, request_id: str, function_arn: str) -> dict[str, Any]:
    """An ``OnFailure``-shaped record for an event the function refused."""
    return {
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": REJECTED_CONDITION,
            "approximateInvokeCount": 1,
        },
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Handled"},
        "responsePayload": {"errorType": type(error).__name__, "errorMessage": str(error)},
    }


def park(queue_url: str, record: dict[str, Any]) -> str:
    """Send the record to the failed-events queue; returns the SQS message id."""
    body = json.dumps(record, default=str)
    if len(body.encode()) > SQS_MAX_BYTES:
        raise ValueError(f"rejection record is {len(body.encode())} bytes, over SQS's {SQS_MAX_BYTES}")
    response = aws.client("sqs").send_message(QueueUrl=queue_url, MessageBody=body)
    return str(response["MessageId"])
