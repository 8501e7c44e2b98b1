"""The action ledger: what each action of a conversation came to, kept on its Powertools record.

One DynamoDB item per conversation, the Powertools idempotency record
(``aftercall.conversation#<md5>``): its ``INPROGRESS`` status keeps out a concurrent invocation until
the holder's Lambda deadline, its ``COMPLETED`` status stores the handler's report with every
action's result. The ledger's entries (``a.<action>``) ride on the same item, written by the same
requests where they can (:mod:`aftercall.guard`, Powertools' "bring your own persistent store"):

* the record's ``INPROGRESS`` write is an ``UpdateItem`` returning the item as it was: what earlier
  attempts left (done actions, failed ones and the time of a write that got no answer), and whether
  an attempt was stopped at its deadline (its ``INPROGRESS`` status still there, its lease past):
  then every action it had not recorded may have been half done, sent before that deadline;
* results of actions that completed while others still ran are written at once (:meth:`record`),
  so a crash before the record completes cannot repeat them (HubSpot has no idempotency key);
* when an attempt fails, Powertools' delete becomes one update that writes every outcome not
  written yet and removes the record's status, which releases the conversation to the retry.

Each write is one write unit (the item stays under 1 KB: results are CRM object ids, errors are
cut short). What an adapter does with a write that got no answer: the unanswered-write protocol
(:mod:`aftercall.crm.http`).

**One action on its own** (:meth:`claim`, :meth:`complete`, :meth:`fail`): the FollowUp function's
sends, long after the conversation, claim their own entry in the same item with their own lease.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from aftercall import aws
from aftercall.deadline import Deadline
from aftercall.errors import ActionInProgressError

IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
#: The Powertools idempotency record's key prefix (``key_prefix`` in aftercall.handler) and statuses.
RECORD_PREFIX = "aftercall.conversation"
RECORD_IN_PROGRESS = "INPROGRESS"
RECORD_COMPLETED = "COMPLETED"
#: Epoch ms: an attempt was stopped at this deadline and the attempts after it have not performed yet.
STOPPED_ATTRIBUTE = "stopped"
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


@dataclass(frozen=True)
class Prior:
    """What earlier attempts left of a conversation (see :meth:`ActionLedger.start`)."""

    previous: dict[str, Claim] = field(default_factory=dict)
    #: Epoch seconds: the deadline of an earlier attempt that was stopped while performing.
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


def record_key(conversation_id: str) -> str:
    """The Powertools idempotency record's key: ``key_prefix#`` and the MD5 of the key value as JSON,
    Powertools' scheme (tests/integration/test_ledger.py checks it against Powertools itself)."""
    digest = hashlib.md5(json.dumps(conversation_id, sort_keys=True).encode(), usedforsecurity=False).hexdigest()
    return f"{RECORD_PREFIX}#{digest}"


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

    # --- the conversation (its start and its failure ride on the record's writes: aftercall.guard) ---

    def record(self, conversation_id: str, action: str, result: dict[str, Any]) -> None:
        """One action is done while others still run: written at once, so no later attempt repeats it."""
        self._set(conversation_id, {action: completed_entry(result)})

    def _set(self, conversation_id: str, entries: dict[str, dict[str, Any]]) -> None:
        names: dict[str, str] = {}
        values: dict[str, Any] = {":expiration": {"N": str(int(time.time()) + self.retention_seconds)}}
        sets = ["expiration = if_not_exists(expiration, :expiration)"]
        for n, (action, entry) in enumerate(entries.items()):
            names[f"#a{n}"] = _attribute(action)
            values[f":a{n}"] = entry
            sets.append(f"#a{n} = :a{n}")
        self.client.update_item(
            TableName=self.table_name,
            Key={"id": {"S": record_key(conversation_id)}},
            UpdateExpression="SET " + ", ".join(sets),
            **({"ExpressionAttributeNames": names} if names else {}),
            ExpressionAttributeValues=values,
        )

    # --- one action on its own (the FollowUp function's sends) -----------------------------------

    def claim(self, conversation_id: str, action: str, deadline: Deadline) -> Claim:
        """Take one action for this invocation, or say it is already done.

        Raises :class:`ActionInProgressError` while another live invocation holds it.
        """
        now = time.time()
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key={"id": {"S": record_key(conversation_id)}},
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
        self._set(conversation_id, {action: completed_entry(result)})

    def fail(self, conversation_id: str, action: str, error: str, unanswered_write_at: float | None = None) -> None:
        """Release the action so the next attempt (which will search before creating) may take it.

        ``unanswered_write_at``: this attempt (or one before it) sent a write that got no answer at
        about this time; the next claim passes it on.
        """
        self._set(conversation_id, {action: failed_entry(error, unanswered_write_at)})

    # --- reading ---------------------------------------------------------------------------------

    def _read(self, conversation_id: str) -> dict[str, Any]:
        item: dict[str, Any] = self.client.get_item(
            TableName=self.table_name, Key={"id": {"S": record_key(conversation_id)}}, ConsistentRead=True
        ).get("Item", {})
        return item

    def lookup(self, conversation_id: str, action: str) -> dict[str, Any] | None:
        """One action's state as plain values (for operators and tests): ``status``, ``result`` (JSON text)...

        An action without a completed entry may have its result in the completed record's report
        (a repeatable action, or the last to finish), or be in progress (with the record's lease)
        while an invocation holds the conversation.
        """
        item = self._read(conversation_id)
        entry = item.get(_attribute(action))
        plain: dict[str, Any] | None = None
        if entry is not None:
            fields = entry["M"]
            plain = {"status": fields["s"]["S"]}
            if "r" in fields:
                plain["result"] = fields["r"]["S"]
            if "e" in fields:
                plain["error"] = fields["e"]["S"]
            if "u" in fields:
                plain["unanswered_write_ms"] = int(fields["u"]["N"])
            if "l" in fields:
                plain["in_progress_expiration"] = int(fields["l"]["N"])
            if plain["status"] == COMPLETED:
                return plain
        status = item.get("status", {}).get("S")
        if status == RECORD_COMPLETED:
            outcome = json.loads(item.get("data", {}).get("S", "{}")).get("actions", {}).get(action)
            if outcome and outcome.get("status") in ("done", "already_done"):
                return {"status": COMPLETED, "result": json.dumps(outcome.get("result"))}
        if plain is None and status == RECORD_IN_PROGRESS:
            return {"status": IN_PROGRESS, "in_progress_expiration": int(item["in_progress_expiration"]["N"])}
        return plain

    def describe(self, conversation_id: str) -> list[ActionRecord]:
        """Every action known for the conversation, sorted by name (for ``aftercall inspect``).

        The ledger's entries, and the results the completed record's report holds for actions the
        ledger did not write (the last to finish, the repeatable ones). ``attempt`` counts the
        attempts that took the conversation.
        """
        item = self._read(conversation_id)
        attempts = int(item.get("attempt", {}).get("N", "1"))
        expires = float(item["expiration"]["N"]) if "expiration" in item else None
        records: dict[str, ActionRecord] = {}
        for name, value in item.items():
            if not name.startswith("a."):
                continue
            fields = value["M"]
            result = json.loads(fields["r"]["S"]) if "r" in fields else None
            records[name[2:]] = ActionRecord(
                action=name[2:],
                status=fields["s"]["S"],
                attempt=attempts,
                result=result if isinstance(result, dict) else None,
                error=fields["e"]["S"] if "e" in fields else None,
                lease_until=int(fields["l"]["N"]) / 1000 if "l" in fields else None,
                unanswered_write_at=int(fields["u"]["N"]) / 1000 if "u" in fields else None,
                expires_at=expires,
            )
        if item.get("status", {}).get("S") == RECORD_COMPLETED:
            report = json.loads(item.get("data", {}).get("S", "{}"))
            for name, outcome in (report.get("actions") or {}).items():
                finished = name in records and records[name].status == COMPLETED
                if finished or outcome.get("status") not in ("done", "already_done"):
                    continue
                result = outcome.get("result")
                records[name] = ActionRecord(
                    action=name,
                    status=COMPLETED,
                    attempt=attempts,
                    result=result if isinstance(result, dict) else None,
                    expires_at=expires,
                )
        return sorted(records.values(), key=lambda r: r.action)


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


def prior_from(item: dict[str, Any], now: float) -> Prior:
    """What earlier attempts left, from the conversation's item as it was before this attempt took it.

    An item past its retention (not yet removed by TTL) is as good as gone. A record still
    ``INPROGRESS`` (its lease past, or this attempt could not have taken it) was stopped at its
    deadline: everything it had not recorded is in doubt from then.
    """
    if not item or int(item.get("expiration", {}).get("N", str(int(now)))) < int(now):
        return Prior()
    stopped = None
    if item.get("status", {}).get("S") == RECORD_IN_PROGRESS and "in_progress_expiration" in item:
        stopped = int(item["in_progress_expiration"]["N"]) / 1000
    elif STOPPED_ATTRIBUTE in item:  # a stopped attempt's doubt, passed on by one that failed before performing
        stopped = int(item[STOPPED_ATTRIBUTE]["N"]) / 1000
    return Prior(previous=_actions(item), stopped_at=stopped)
