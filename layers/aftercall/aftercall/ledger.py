"""The ledger: one DynamoDB item per conversation, so nothing happens twice and a retry redoes only what failed.

It lives in the idempotency table (keys ``conversation#<id>``). Every write is one write unit: the
item stays well under 1 KB (results are CRM object ids; errors are cut short).

**The conversation** (EndHandler). :meth:`ActionLedger.begin` is one conditional write that takes
the whole conversation for this invocation, with a lease that ends at its Lambda deadline: it
succeeds for a new conversation, a failed one, or one whose lease ran out (that invocation was
stopped), and otherwise says why not: already completed with the same content (a duplicate),
completed or in progress with *different* content (a conflicting duplicate), or in progress in
another live invocation (a twin). Holding the conversation means holding all its actions, so
actions need no claims of their own. :meth:`record` writes one action's result as soon as it is
done; :meth:`finish` is the last write, ``COMPLETED`` or ``FAILED`` with every outcome not yet
written (the last action's result rides on it). The completed results are the conversation→CRM
object mapping.

An attempt also learns what the attempts before it may have left half done (``Claim``): an
action that failed with a write that got no answer (the time it recorded), or every unfinished
action of an attempt that was stopped at its deadline (that deadline). Adapters without an
idempotency key wait for such a write to settle before they look for it (aftercall.crm.hubspot).

**One action on its own** (:meth:`claim`, :meth:`complete`, :meth:`fail`): the FollowUp function's
sends, long after the conversation, claim their own entry in the same item with their own lease.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from aftercall import aws
from aftercall.deadline import Deadline
from aftercall.errors import ActionInProgressError, ConflictingDuplicateError, ConversationInProgressError

IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
#: Errors are kept short: the item stays under 1 KB (one write unit); the logs have the whole message.
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class Claim:
    """How this attempt performs one action: done already, or to do (after a half-done attempt?)."""

    done: bool
    result: dict[str, Any] | None = None
    recovering: bool = False
    #: Epoch seconds: the attempt before may have sent a write at about this time that got no answer.
    unanswered_write_at: float | None = None


@dataclass(frozen=True)
class Begun:
    """What :meth:`ActionLedger.begin` found; ``duplicate``: completed before, nothing to do again."""

    duplicate: bool
    attempt: int
    previous: dict[str, Claim] = field(default_factory=dict)
    #: Epoch seconds: the deadline of an earlier attempt that was stopped mid-way (its lease ran out).
    stopped_at: float | None = None

    def claim(self, action: str) -> Claim:
        """How this attempt should perform ``action``."""
        old = self.previous.get(action)
        if old is not None and old.done:
            return old
        if self.stopped_at is not None:  # the stopped attempt may have been in the middle of it
            unanswered = max(self.stopped_at, (old.unanswered_write_at if old else None) or 0.0)
            return Claim(done=False, recovering=True, unanswered_write_at=unanswered)
        return old or Claim(done=False)


def ledger_key(conversation_id: str) -> str:
    return f"conversation#{conversation_id}"


def _attribute(action: str) -> str:
    return f"a.{action}"


def completed_entry(result: dict[str, Any]) -> dict[str, Any]:
    return {"M": {"s": {"S": COMPLETED}, "r": {"S": json.dumps(result, separators=(",", ":"))}}}


def failed_entry(error: str, unanswered_write_at: float | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"s": {"S": FAILED}, "e": {"S": error[:MAX_ERROR_CHARS]}}
    if unanswered_write_at is not None:
        entry["u"] = {"N": str(int(unanswered_write_at * 1000))}
    return {"M": entry}


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

    # --- the conversation -------------------------------------------------------------------------

    def begin(self, conversation_id: str, payload_hash: str, deadline: Deadline) -> Begun:
        """Take the conversation for this invocation, or say it was done before.

        Raises :class:`ConflictingDuplicateError` when it was received before with other content
        and :class:`ConversationInProgressError` while another live invocation holds it.
        """
        now = time.time()
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key={"id": {"S": ledger_key(conversation_id)}},
                UpdateExpression=(
                    "SET #status = :in_progress, lease = :lease, expiration = :expiration, payload_hash = :hash, "
                    "attempt = if_not_exists(attempt, :zero) + :one"
                ),
                ConditionExpression=(
                    "attribute_not_exists(#status) OR expiration < :now_s OR #status = :failed "
                    "OR (#status = :in_progress AND lease < :now_ms)"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":in_progress": {"S": IN_PROGRESS},
                    ":failed": {"S": FAILED},
                    ":lease": {"N": str(deadline.epoch_ms)},
                    ":expiration": {"N": str(int(now) + self.retention_seconds)},
                    ":hash": {"S": payload_hash},
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                    ":now_s": {"N": str(int(now))},
                    ":now_ms": {"N": str(int(now * 1000))},
                },
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            item: dict[str, Any] = exc.response.get("Item") or self._read(conversation_id)  # type: ignore[assignment]
            return self._taken(conversation_id, payload_hash, item)
        old = response.get("Attributes") or {}
        if old and int(old.get("expiration", {}).get("N", "0")) < int(now):
            return self._restart(conversation_id, payload_hash, deadline, now)
        stopped = old.get("status", {}).get("S") == IN_PROGRESS and "lease" in old
        return Begun(
            duplicate=False,
            attempt=int(old.get("attempt", {}).get("N", "0")) + 1,
            previous=_actions(old),
            stopped_at=int(old["lease"]["N"]) / 1000 if stopped else None,
        )

    def _taken(self, conversation_id: str, payload_hash: str, item: dict[str, Any]) -> Begun:
        status = item.get("status", {}).get("S")
        if item.get("payload_hash", {}).get("S", payload_hash) != payload_hash:
            raise ConflictingDuplicateError(
                f"conversation {conversation_id} was already received with different content; "
                "this event was not processed (compare both in the failed-events queue before replaying)"
            )
        if status == COMPLETED:
            return Begun(duplicate=True, attempt=int(item.get("attempt", {}).get("N", "1")), previous=_actions(item))
        raise ConversationInProgressError(f"conversation {conversation_id} is being processed by another invocation")

    def _restart(self, conversation_id: str, payload_hash: str, deadline: Deadline, now: float) -> Begun:
        """An item past its expiration (not yet removed by TTL): start over without its old entries."""
        self.client.put_item(
            TableName=self.table_name,
            Item={
                "id": {"S": ledger_key(conversation_id)},
                "status": {"S": IN_PROGRESS},
                "lease": {"N": str(deadline.epoch_ms)},
                "expiration": {"N": str(int(now) + self.retention_seconds)},
                "payload_hash": {"S": payload_hash},
                "attempt": {"N": "1"},
            },
            ConditionExpression="lease = :lease",
            ExpressionAttributeValues={":lease": {"N": str(deadline.epoch_ms)}},
        )
        return Begun(duplicate=False, attempt=1)

    def record(self, conversation_id: str, action: str, result: dict[str, Any]) -> None:
        """One action is done: written at once, so no later attempt performs it again."""
        self.client.update_item(
            TableName=self.table_name,
            Key={"id": {"S": ledger_key(conversation_id)}},
            UpdateExpression="SET #a = :entry",
            ExpressionAttributeNames={"#a": _attribute(action)},
            ExpressionAttributeValues={":entry": completed_entry(result)},
        )

    def finish(self, conversation_id: str, completed: bool, entries: dict[str, dict[str, Any]]) -> None:
        """The conversation's last write: its status and every action outcome not written yet."""
        names = {"#status": "status"}
        values: dict[str, Any] = {":status": {"S": COMPLETED if completed else FAILED}}
        sets = ["#status = :status"]
        for n, (action, entry) in enumerate(entries.items()):
            names[f"#a{n}"] = _attribute(action)
            values[f":a{n}"] = entry
            sets.append(f"#a{n} = :a{n}")
        self.client.update_item(
            TableName=self.table_name,
            Key={"id": {"S": ledger_key(conversation_id)}},
            UpdateExpression="SET " + ", ".join(sets) + " REMOVE lease",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def release(self, conversation_id: str, begun: Begun) -> None:
        """Let go of a conversation whose End function failed before any action: the retry starts afresh.

        An item with nothing from earlier attempts is deleted (the failure leaves no trace in the
        table); one that carries earlier outcomes is marked failed, so they are kept.
        """
        if begun.previous or begun.stopped_at is not None or begun.attempt > 1:
            self.finish(conversation_id, completed=False, entries={})
            return
        self.client.delete_item(TableName=self.table_name, Key={"id": {"S": ledger_key(conversation_id)}})

    # --- one action on its own (the FollowUp function's sends) -----------------------------------

    def claim(self, conversation_id: str, action: str, deadline: Deadline) -> Claim:
        """Take one action for this invocation, or say it is already done.

        Raises :class:`ActionInProgressError` while another live invocation holds it.
        """
        now = time.time()
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key={"id": {"S": ledger_key(conversation_id)}},
                UpdateExpression="SET #a = :entry, expiration = if_not_exists(expiration, :expiration)",
                ConditionExpression=(
                    "attribute_not_exists(#a) OR #a.#s = :failed OR (#a.#s = :in_progress AND #a.#l < :now_ms)"
                ),
                ExpressionAttributeNames={"#a": _attribute(action), "#s": "s", "#l": "l"},
                ExpressionAttributeValues={
                    ":entry": {"M": {"s": {"S": IN_PROGRESS}, "l": {"N": str(deadline.epoch_ms)}}},
                    ":expiration": {"N": str(int(now) + self.retention_seconds)},
                    ":failed": {"S": FAILED},
                    ":in_progress": {"S": IN_PROGRESS},
                    ":now_ms": {"N": str(int(now * 1000))},
                },
                ReturnValues="UPDATED_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            found: dict[str, Any] = exc.response.get("Item") or self._read(conversation_id)  # type: ignore[assignment]
            old = _actions(found).get(action)
            if old is not None and old.done:
                return old
            raise ActionInProgressError(
                f"action {action!r} of conversation {conversation_id} is being performed by another invocation"
            ) from None
        old_entry = (response.get("Attributes") or {}).get(_attribute(action))
        if old_entry is None:
            return Claim(done=False)
        return _claim(old_entry["M"]) if old_entry["M"]["s"]["S"] == FAILED else _stopped(old_entry["M"])

    def complete(self, conversation_id: str, action: str, result: dict[str, Any]) -> None:
        self.record(conversation_id, action, result)

    def fail(self, conversation_id: str, action: str, error: str, unanswered_write_at: float | None = None) -> None:
        """Release the action so the next attempt (which will search before creating) may take it.

        ``unanswered_write_at``: this attempt (or one before it) sent a write that got no answer at
        about this time; the next claim passes it on.
        """
        self.client.update_item(
            TableName=self.table_name,
            Key={"id": {"S": ledger_key(conversation_id)}},
            UpdateExpression="SET #a = :entry",
            ExpressionAttributeNames={"#a": _attribute(action)},
            ExpressionAttributeValues={":entry": failed_entry(error, unanswered_write_at)},
        )

    # --- reading ---------------------------------------------------------------------------------

    def _read(self, conversation_id: str) -> dict[str, Any]:
        item: dict[str, Any] = self.client.get_item(
            TableName=self.table_name, Key={"id": {"S": ledger_key(conversation_id)}}, ConsistentRead=True
        ).get("Item", {})
        return item

    def lookup(self, conversation_id: str, action: str) -> dict[str, Any] | None:
        """One action's state as plain values (for operators and tests): ``status``, ``result``, ``error``...

        An action with no entry of its own while its conversation is in progress is reported in
        progress, with the conversation's lease: that invocation may be performing it.
        """
        item = self._read(conversation_id)
        entry = item.get(_attribute(action))
        if entry is not None:
            plain: dict[str, Any] = {"status": entry["M"]["s"]["S"]}
            fields = entry["M"]
            if "r" in fields:
                plain["result"] = fields["r"]["S"]  # the JSON text, as stored
            if "e" in fields:
                plain["error"] = fields["e"]["S"]
            if "u" in fields:
                plain["unanswered_write_ms"] = int(fields["u"]["N"])
            if "l" in fields:
                plain["in_progress_expiration"] = int(fields["l"]["N"])
            return plain
        if item.get("status", {}).get("S") == IN_PROGRESS:
            return {"status": IN_PROGRESS, "in_progress_expiration": int(item["lease"]["N"])}
        return None


def _actions(item: dict[str, Any]) -> dict[str, Claim]:
    """The action entries of a conversation item, as claims for the next attempt."""
    claims: dict[str, Claim] = {}
    for name, value in item.items():
        if name.startswith("a."):
            fields = value["M"]
            status = fields["s"]["S"]
            claims[name[2:]] = _claim(fields) if status != IN_PROGRESS else _stopped(fields)
    return claims


def _claim(fields: dict[str, Any]) -> Claim:
    if fields["s"]["S"] == COMPLETED:
        return Claim(done=True, result=json.loads(fields["r"]["S"]))
    unanswered = int(fields["u"]["N"]) / 1000 if "u" in fields else None
    return Claim(done=False, recovering=True, unanswered_write_at=unanswered)


def _stopped(fields: dict[str, Any]) -> Claim:
    """A claim whose lease ran out: that attempt was stopped mid-action, anything it sent went out before."""
    return Claim(done=False, recovering=True, unanswered_write_at=int(fields["l"]["N"]) / 1000)
