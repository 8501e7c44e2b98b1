"""Powertools' idempotency record as the conversation's guard, with the action ledger riding on it.

A persistence layer of our own, Powertools' documented extension point ("Bring your own
persistent store": a subclass of its ``DynamoDBPersistenceLayer``). Powertools decides when to
take, complete or release the record, exactly as with its own layer; only two of its writes
change, so that the ledger (:mod:`aftercall.ledger`) needs no write of its own to start or to end
an attempt:

* **taking the record** is an ``UpdateItem`` instead of a ``PutItem``, on Powertools' own
  condition, returning the item as it was (``ALL_OLD``). A ``PutItem`` would wipe the ledger's
  entries; the update keeps them and hands them to the attempt (:meth:`ConversationGuard.prior`):
  what is done, what failed, whether the attempt before was stopped at its deadline;
* **releasing it after a failure** (Powertools deletes the record) is an ``UpdateItem`` that writes
  the failed attempt's outcomes not written yet and removes the record's status. An item without a
  status is no record to Powertools: the next attempt takes it, and finds the outcomes. With
  nothing to keep (a first attempt that failed in the End function) it is Powertools' own delete.

Completing the record is Powertools' own ``UpdateItem`` (it keeps the ledger's entries).
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import STATUS_CONSTANTS, DataRecord
from botocore.exceptions import ClientError

from aftercall.ledger import STOPPED_ATTRIBUTE, Prior, prior_from


class ConversationGuard(DynamoDBPersistenceLayer):
    """Powertools' DynamoDB persistence layer whose take and release also start and close the ledger."""

    def __init__(self, table_name: str, boto3_client: Any) -> None:
        super().__init__(table_name=table_name, boto3_client=boto3_client)
        self._lock = threading.Lock()
        self._priors: dict[str, Prior] = {}
        self._closing: dict[str, dict[str, dict[str, Any]]] = {}

    # --- what the handler asks of it ---------------------------------------------------------------

    def prior(self, record_key: str) -> Prior:
        """What earlier attempts left of the conversation this invocation just took."""
        with self._lock:
            return self._priors.get(record_key, Prior())

    def close_with(self, record_key: str, entries: dict[str, dict[str, Any]]) -> None:
        """The failed attempt's outcomes not written yet: written when Powertools releases the record."""
        with self._lock:
            self._closing[record_key] = entries

    def holds(self, record_key: str) -> bool:
        """Whether a record already holds the conversation: completed, or in progress under a live lease
        (one consistent read). Such an event skips planning and goes straight to Powertools' answer."""
        now = dt.datetime.now().timestamp()
        item = self.client.get_item(TableName=self.table_name, Key=self._get_key(record_key), ConsistentRead=True).get(
            "Item"
        )
        if not item or self.status_attr not in item or int(item[self.expiry_attr]["N"]) < int(now):
            return False
        status = item[self.status_attr]["S"]
        lease = item.get(self.in_progress_expiry_attr, {}).get("N")
        live = lease is not None and int(lease) >= int(now * 1000)
        return status == STATUS_CONSTANTS["COMPLETED"] or (status == STATUS_CONSTANTS["INPROGRESS"] and live)

    # --- Powertools' persistence layer ---------------------------------------------------------------

    def _put_record(self, data_record: DataRecord) -> None:
        now = dt.datetime.now().timestamp()
        names = {
            "#id": self.key_attr,
            "#expiry": self.expiry_attr,
            "#in_progress_expiry": self.in_progress_expiry_attr,
            "#status": self.status_attr,
        }
        values: dict[str, Any] = {
            ":expiry": {"N": str(data_record.expiry_timestamp)},
            ":status": {"S": data_record.status},
            ":now": {"N": str(int(now))},
            ":now_in_millis": {"N": str(int(now * 1000))},
            ":inprogress": {"S": STATUS_CONSTANTS["INPROGRESS"]},
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
        }
        sets = ["#expiry = :expiry", "#status = :status", "attempt = if_not_exists(attempt, :zero) + :one"]
        removes = []
        if data_record.in_progress_expiry_timestamp is not None:
            values[":in_progress_expiry"] = {"N": str(data_record.in_progress_expiry_timestamp)}
            sets.append("#in_progress_expiry = :in_progress_expiry")
        else:
            removes.append("#in_progress_expiry")
        if self.payload_validation_enabled and data_record.payload_hash:
            names["#validation_key"] = self.validation_key_attr
            values[":validation_key"] = {"S": data_record.payload_hash}
            sets.append("#validation_key = :validation_key")
        # Powertools' own condition (no record, an expired one, or one whose holder's lease ran out),
        # and an item without a status: released by a failed attempt, or a follow-up's entries alone.
        condition = (
            "attribute_not_exists(#id) OR attribute_not_exists(#status) OR #expiry < :now OR "
            "(#status = :inprogress AND attribute_exists(#in_progress_expiry) AND #in_progress_expiry < :now_in_millis)"
        )
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=self._get_key(data_record.idempotency_key),
                UpdateExpression="SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else ""),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            item: dict[str, Any] | None = exc.response.get("Item")  # type: ignore[assignment]
            if not item:
                raise IdempotencyItemAlreadyExistsError() from exc
            old_data_record = self._item_to_data_record(item)
            self._validate_payload(data_payload=data_record, stored_data_record=old_data_record)
            raise IdempotencyItemAlreadyExistsError(old_data_record=old_data_record) from exc
        old: dict[str, Any] = response.get("Attributes") or {}
        prior = prior_from(old, now)
        stale = [name for name in old if name.startswith("a.")] if not prior.previous else []
        if stale:  # a conversation back after its retention: the old entries are not this one's
            self.client.update_item(
                TableName=self.table_name,
                Key=self._get_key(data_record.idempotency_key),
                UpdateExpression="REMOVE " + ", ".join(f"#s{n}" for n in range(len(stale))),
                ExpressionAttributeNames={f"#s{n}": name for n, name in enumerate(stale)},
            )
        with self._lock:
            self._priors[data_record.idempotency_key] = prior

    def _update_record(self, data_record: DataRecord) -> None:
        with self._lock:
            self._priors.pop(data_record.idempotency_key, None)
        super()._update_record(data_record)

    def _get_record(self, idempotency_key: str) -> DataRecord:
        response = self.client.get_item(
            TableName=self.table_name, Key=self._get_key(idempotency_key), ConsistentRead=True
        )
        item = response.get("Item")
        if not item or self.status_attr not in item:  # released, or a follow-up's entries alone
            raise IdempotencyItemNotFoundError
        return self._item_to_data_record(item)

    def _delete_record(self, data_record: DataRecord) -> None:
        """Release the record (Powertools deletes it) and write the failed attempt's outcomes, in one update."""
        with self._lock:
            entries = self._closing.pop(data_record.idempotency_key, None)
            prior = self._priors.pop(data_record.idempotency_key, Prior())
        if entries is None and not prior.previous and prior.stopped_at is None:
            # Failed before performing (in the End function) with nothing left by earlier attempts:
            # the item holds this attempt's record alone, so it goes as Powertools' own layer does it.
            super()._delete_record(data_record)
            return
        names = {
            "#status": self.status_attr,
            "#in_progress_expiry": self.in_progress_expiry_attr,
            "#data": self.data_attr,
            "#validation_key": self.validation_key_attr,
            "#stopped": STOPPED_ATTRIBUTE,
        }
        values: dict[str, Any] = {}
        sets = []
        removes = ["#status", "#in_progress_expiry", "#data", "#validation_key"]
        if entries is None and prior.stopped_at is not None:
            # Failed before performing (in the End function) after an attempt that was stopped: that
            # attempt's doubt is still open, and the record's lease that said so goes now.
            values[":stopped"] = {"N": str(int(prior.stopped_at * 1000))}
            sets.append("#stopped = :stopped")
        else:  # performed: each failed outcome carries its own doubt on (its unanswered write's time)
            removes.append("#stopped")
        entries = entries or {}
        for n, (action, entry) in enumerate(entries.items()):
            names[f"#a{n}"] = f"a.{action}"
            values[f":a{n}"] = entry
            sets.append(f"#a{n} = :a{n}")
        self.client.update_item(
            TableName=self.table_name,
            Key=self._get_key(data_record.idempotency_key),
            UpdateExpression=("SET " + ", ".join(sets) + " " if sets else "") + "REMOVE " + ", ".join(removes),
            ExpressionAttributeNames=names,
            **({"ExpressionAttributeValues": values} if values else {}),
        )
