"""The action ledger: one DynamoDB item per (conversation, action), so a retry redoes only what failed.

It shares the idempotency table with Powertools (its keys start with ``action#``). A claim is a
conditional write: it succeeds for a new action, a failed one, or one whose in-progress lease
ran past the Lambda deadline of the invocation that held it (that invocation timed out).
The completed item keeps the CRM object id: this is the conversation→object mapping.

A claim also says when the attempt before may have left a write unanswered, which the CRM could
still apply (``Claim.unanswered_write_at``): the time a failed attempt recorded, or the deadline
of an attempt that was stopped mid-action. Adapters without an idempotency key wait for such a
write to settle before they look for it (see aftercall.crm.hubspot).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from aftercall import aws
from aftercall.deadline import Deadline
from aftercall.errors import ActionInProgressError

IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
FAILED = "FAILED"


@dataclass(frozen=True)
class Claim:
    """The outcome of :meth:`ActionLedger.claim`."""

    done: bool
    result: dict[str, Any] | None = None
    recovering: bool = False
    attempt: int = 1
    #: Epoch seconds: the attempt before may have sent a write at about this time that got no answer.
    unanswered_write_at: float | None = None


@dataclass(frozen=True)
class ActionRecord:
    """One action of a conversation as the ledger knows it (:meth:`ActionLedger.describe`)."""

    action: str
    status: str
    attempt: int
    result: dict[str, Any] | None = None
    error: str | None = None
    #: Epoch seconds: an in-progress attempt holds the action until then (its invocation's deadline).
    lease_until: float | None = None
    #: Epoch seconds: an attempt sent a write at about this time that got no answer.
    unanswered_write_at: float | None = None
    #: Epoch seconds: when DynamoDB's TTL may remove the item.
    expires_at: float | None = None


def ledger_key(conversation_id: str, action: str) -> str:
    return f"action#{conversation_id}#{action}"


class ActionLedger:
    def __init__(self, table_name: str, retention_seconds: int, client: Any = None) -> None:
        self.table_name = table_name
        self.retention_seconds = retention_seconds
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("dynamodb")
        return self._client

    def claim(self, conversation_id: str, action: str, deadline: Deadline) -> Claim:
        """Take the action for this invocation, or say it is already done.

        Raises :class:`ActionInProgressError` while another live invocation holds it.
        """
        now = time.time()
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key={"id": {"S": ledger_key(conversation_id, action)}},
                UpdateExpression=(
                    "SET #status = :in_progress, in_progress_expiration = :lease, expiration = :expiration, "
                    "attempt = if_not_exists(attempt, :zero) + :one REMOVE #error"
                ),
                ConditionExpression=(
                    "attribute_not_exists(id) OR #status = :failed OR expiration < :now_s "
                    "OR (#status = :in_progress AND in_progress_expiration < :now_ms)"
                ),
                ExpressionAttributeNames={"#status": "status", "#error": "error"},
                ExpressionAttributeValues={
                    ":in_progress": {"S": IN_PROGRESS},
                    ":failed": {"S": FAILED},
                    ":lease": {"N": str(deadline.epoch_ms)},
                    ":expiration": {"N": str(int(now) + self.retention_seconds)},
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                    ":now_s": {"N": str(int(now))},
                    ":now_ms": {"N": str(int(now * 1000))},
                },
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return self._existing(conversation_id, action)
        old = response.get("Attributes") or {}
        attempt = int(old.get("attempt", {}).get("N", "0")) + 1
        return Claim(done=False, recovering=bool(old), attempt=attempt, unanswered_write_at=_unanswered_write_at(old))

    def _existing(self, conversation_id: str, action: str) -> Claim:
        item = self.client.get_item(
            TableName=self.table_name, Key={"id": {"S": ledger_key(conversation_id, action)}}, ConsistentRead=True
        ).get("Item", {})
        if item.get("status", {}).get("S") == COMPLETED:
            return Claim(done=True, result=json.loads(item.get("result", {}).get("S", "null")))
        raise ActionInProgressError(
            f"action {action!r} of conversation {conversation_id} is being performed by another invocation"
        )

    def complete(self, conversation_id: str, action: str, result: dict[str, Any]) -> None:
        self.client.update_item(
            TableName=self.table_name,
            Key={"id": {"S": ledger_key(conversation_id, action)}},
            UpdateExpression="SET #status = :completed, #result = :result REMOVE in_progress_expiration",
            ExpressionAttributeNames={"#status": "status", "#result": "result"},
            ExpressionAttributeValues={":completed": {"S": COMPLETED}, ":result": {"S": json.dumps(result)}},
        )

    def fail(self, conversation_id: str, action: str, error: str, unanswered_write_at: float | None = None) -> None:
        """Release the action so the next attempt (which will search before creating) may take it.

        ``unanswered_write_at``: this attempt (or one before it) sent a write that got no answer at
        about this time; the next claim passes it on.
        """
        update = "SET #status = :failed, #error = :error"
        values: dict[str, Any] = {":failed": {"S": FAILED}, ":error": {"S": error[:1000]}}
        if unanswered_write_at is not None:
            update += ", unanswered_write_ms = :unanswered"
            values[":unanswered"] = {"N": str(int(unanswered_write_at * 1000))}
        self.client.update_item(
            TableName=self.table_name,
            Key={"id": {"S": ledger_key(conversation_id, action)}},
            UpdateExpression=update + " REMOVE in_progress_expiration",
            ExpressionAttributeNames={"#status": "status", "#error": "error"},
            ExpressionAttributeValues=values,
        )

    def lookup(self, conversation_id: str, action: str) -> dict[str, Any] | None:
        """The stored item as plain values (for operators and tests)."""
        item = self.client.get_item(
            TableName=self.table_name, Key={"id": {"S": ledger_key(conversation_id, action)}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        return {key: next(iter(value.values())) for key, value in item.items()}

    def describe(self, conversation_id: str) -> list[ActionRecord]:
        """Every action recorded for the conversation, sorted by name (for ``aftercall inspect``).

        The items share the table's only key, so this scans it for the conversation's prefix: an
        operator's occasional read, paid per item scanned, never on the event path.
        """
        prefix = ledger_key(conversation_id, "")
        records = []
        pages = self.client.get_paginator("scan").paginate(
            TableName=self.table_name,
            FilterExpression="begins_with(id, :prefix)",
            ExpressionAttributeValues={":prefix": {"S": prefix}},
            ConsistentRead=True,
        )
        for page in pages:
            for item in page.get("Items", []):
                result = json.loads(item["result"]["S"]) if "result" in item else None
                records.append(
                    ActionRecord(
                        action=item["id"]["S"][len(prefix) :],
                        status=item.get("status", {}).get("S", "UNKNOWN"),
                        attempt=int(item.get("attempt", {}).get("N", "0")),
                        result=result if isinstance(result, dict) else None,
                        error=item.get("error", {}).get("S"),
                        lease_until=_millis(item, "in_progress_expiration"),
                        unanswered_write_at=_millis(item, "unanswered_write_ms"),
                        expires_at=float(item["expiration"]["N"]) if "expiration" in item else None,
                    )
                )
        return sorted(records, key=lambda record: record.action)


def _millis(item: dict[str, Any], name: str) -> float | None:
    return int(item[name]["N"]) / 1000 if name in item else None


def _unanswered_write_at(old: dict[str, Any]) -> float | None:
    """When the attempt before a claim may have sent a write that got no answer (epoch seconds).

    A failed attempt recorded it; an attempt whose lease expired was stopped at its deadline in
    the middle of the action, so anything it sent went out before that deadline.
    """
    times = []
    if "unanswered_write_ms" in old:
        times.append(int(old["unanswered_write_ms"]["N"]) / 1000)
    if old.get("status", {}).get("S") == IN_PROGRESS and "in_progress_expiration" in old:
        times.append(int(old["in_progress_expiration"]["N"]) / 1000)
    return max(times, default=None)
