"""The bare baseline of bench/coldstart.py: a handler that imports boto3 and does one DynamoDB put.

The smallest useful Lambda with an AWS call, written the usual way (client at module level, as
AWS recommends for reuse). It writes into the same table as the End function, under its own keys.
"""

from __future__ import annotations

import os
from typing import Any

import boto3

_TABLE = os.environ["IDEMPOTENCY_TABLE"]
_dynamodb = boto3.client("dynamodb")


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    conversation_id = str(event["detail"]["conversation_id"])
    _dynamodb.put_item(
        TableName=_TABLE,
        Item={"id": {"S": f"baseline#{conversation_id}"}, "received_at": {"S": str(event["time"])}},
    )
    return {"status": "stored", "conversation_id": conversation_id}
