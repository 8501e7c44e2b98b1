"""The caller lease: at most one CRM contact per new caller, across concurrent conversations.

Two conversations of one new caller can be processed at the same moment in two execution
environments; both search, both find nothing (and a CRM's search lags its writes by seconds).
Before creating, an adapter takes a short lease on the caller in the idempotency table (items
``caller#<crm>#<hash of the normalised phone or email>``, so no raw number or address is stored).
The holder creates the contact and records its id; the other conversation waits for the record
and uses the same contact. The lease ends at the holder's Lambda deadline, so a holder stopped
mid-create does not block the caller for longer than that; the next holder then learns that a
create may have been sent (``Lease.unsettled_at``) and looks for it before creating again.

Kept apart from the action ledger (``aftercall.ledger``) on purpose: it is keyed by caller, not by
conversation, and outlives no conversation by much (``remember_seconds``). The same items share
callers found by search between execution environments for a few minutes (``FOUND``), so a burst
of one caller's conversations searches once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from aftercall import aws
from aftercall.deadline import Deadline
from aftercall.errors import CrmUnavailableError

LEASED = "LEASED"
CREATED = "CREATED"
FOUND = "FOUND"
#: How long a created caller's contact id is remembered: far beyond any CRM's search lag, and
#: the per-caller create decision is made again (by searching) after it.
DEFAULT_REMEMBER_SECONDS = 24 * 3600
#: How long a caller's record id found by search is shared with other execution environments
#: (saves searches, the most rate-limited requests; short, as the record may be merged or deleted).
FOUND_SECONDS = 15 * 60
#: Stop waiting for another conversation's create when less than this is left of our own time.
WAIT_MARGIN_SECONDS = 2.0


def lease_key(crm: str, caller_key: str) -> str:
    """The item id: the CRM and a hash of the caller's normalised phone or email (no raw PII)."""
    digest = hashlib.sha256(caller_key.encode()).hexdigest()[:40]
    return f"caller#{crm}#{digest}"


@dataclass(frozen=True)
class Lease:
    """The outcome of :meth:`CallerLeases.acquire`: either the contact exists, or we hold the lease."""

    contact_id: str | None = None
    #: The conversation whose processing created the contact (when ``contact_id`` is set).
    created_by: str | None = None
    #: Epoch seconds: an earlier holder may have sent a create at about this time that got no clear
    #: answer; the CRM may still apply it, so look (after it settles) before creating.
    unsettled_at: float | None = None

    @property
    def held(self) -> bool:
        return self.contact_id is None


class CallerLeases:
    def __init__(
        self,
        table_name: str,
        *,
        remember_seconds: int = DEFAULT_REMEMBER_SECONDS,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.table_name = table_name
        self.remember_seconds = remember_seconds
        self._client = client
        self._sleep = sleep

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("dynamodb")
        return self._client

    def acquire(self, crm: str, caller_key: str, conversation_id: str, deadline: Deadline) -> Lease:
        """Hold the caller's lease, or return the contact another conversation created.

        Waits (within the deadline) while another live conversation holds it; raises
        :class:`CrmUnavailableError` when that does not end in time (a retry will find the contact).
        """
        key = lease_key(crm, caller_key)
        delay = 0.1
        while True:
            lease = self._try_acquire(key, conversation_id, deadline)
            if lease is not None:
                return lease
            if deadline.remaining() < WAIT_MARGIN_SECONDS + delay:
                raise CrmUnavailableError(
                    f"{crm}: another conversation of this caller is creating their contact; retrying later"
                )
            self._sleep(delay)
            delay = min(delay * 2, 1.0)

    def _try_acquire(self, key: str, conversation_id: str, deadline: Deadline) -> Lease | None:
        now = time.time()
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key={"id": {"S": key}},
                UpdateExpression="SET #status = :leased, holder = :me, lease_until_ms = :lease, expiration = :exp",
                ConditionExpression=(
                    "attribute_not_exists(id) OR expiration < :now_s OR (#status = :leased AND "
                    "(lease_until_ms < :now_ms OR holder = :me))"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":leased": {"S": LEASED},
                    ":me": {"S": conversation_id},
                    ":lease": {"N": str(deadline.epoch_ms)},
                    ":exp": {"N": str(int(now) + self.remember_seconds)},
                    ":now_s": {"N": str(int(now))},
                    ":now_ms": {"N": str(int(now * 1000))},
                },
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            item = self.client.get_item(TableName=self.table_name, Key={"id": {"S": key}}, ConsistentRead=True).get(
                "Item", {}
            )
            known = _known(item, now)
            if known is not None:
                return known
            return None  # held by another live conversation: wait and try again
        return Lease(unsettled_at=_unsettled_at(response.get("Attributes") or {}))

    def known(self, crm: str, caller_key: str) -> Lease | None:
        """The caller's record id when one was created or found recently (one consistent read)."""
        item = self.client.get_item(
            TableName=self.table_name, Key={"id": {"S": lease_key(crm, caller_key)}}, ConsistentRead=True
        ).get("Item", {})
        return _known(item, time.time())

    def remember(self, crm: str, caller_key: str, contact_id: str) -> None:
        """Share a record id found by search with the other environments, unless a create holds the lease."""
        now = time.time()
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"id": {"S": lease_key(crm, caller_key)}},
                UpdateExpression="SET #status = :found, contact_id = :contact, expiration = :exp REMOVE created_by",
                ConditionExpression="attribute_not_exists(id) OR #status = :found OR expiration < :now_s",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":found": {"S": FOUND},
                    ":contact": {"S": contact_id},
                    ":exp": {"N": str(int(now) + FOUND_SECONDS)},
                    ":now_s": {"N": str(int(now))},
                },
            )
        except ClientError as exc:
            # A failed condition: a create holds or recorded this caller; that record wins.
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def record(self, crm: str, caller_key: str, contact_id: str, conversation_id: str) -> None:
        """The contact exists now (created by ``conversation_id``'s processing, or found)."""
        self.client.update_item(
            TableName=self.table_name,
            Key={"id": {"S": lease_key(crm, caller_key)}},
            UpdateExpression=(
                "SET #status = :created, contact_id = :contact, created_by = :me, expiration = :exp "
                "REMOVE lease_until_ms, holder, unsettled_ms"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":created": {"S": CREATED},
                ":contact": {"S": contact_id},
                ":me": {"S": conversation_id},
                ":exp": {"N": str(int(time.time()) + self.remember_seconds)},
            },
        )

    def release(self, crm: str, caller_key: str, conversation_id: str, unsettled_at: float | None) -> None:
        """Give the lease up after a failed create; ``unsettled_at`` when the CRM may still apply it."""
        update = "SET lease_until_ms = :zero"
        values: dict[str, Any] = {":zero": {"N": "0"}, ":me": {"S": conversation_id}}
        if unsettled_at is not None:
            update += ", unsettled_ms = :unsettled"
            values[":unsettled"] = {"N": str(int(unsettled_at * 1000))}
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"id": {"S": lease_key(crm, caller_key)}},
                UpdateExpression=update,
                ConditionExpression="holder = :me",
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            # A failed condition: another conversation took the lease over after ours ended; nothing to release.
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def lookup(self, crm: str, caller_key: str) -> dict[str, Any] | None:
        """The stored item as plain values (for operators and tests)."""
        item = self.client.get_item(
            TableName=self.table_name, Key={"id": {"S": lease_key(crm, caller_key)}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        return {key: next(iter(value.values())) for key, value in item.items()}


def _known(item: dict[str, Any], now: float) -> Lease | None:
    """A created or found record that has not expired (DynamoDB deletes expired items only lazily)."""
    status = item.get("status", {}).get("S")
    if status not in (CREATED, FOUND) or "contact_id" not in item:
        return None
    if int(item.get("expiration", {}).get("N", "0")) < int(now):
        return None
    return Lease(contact_id=item["contact_id"]["S"], created_by=item.get("created_by", {}).get("S"))


def _unsettled_at(old: dict[str, Any]) -> float | None:
    """When a create by the holder before us may still be applied (epoch seconds).

    A holder that released recorded it; a holder whose lease ran out was stopped at its deadline,
    perhaps in the middle of the create, so anything it sent went out before that deadline.
    """
    times = []
    if "unsettled_ms" in old:
        times.append(int(old["unsettled_ms"]["N"]) / 1000)
    lease_until = int(old.get("lease_until_ms", {}).get("N", "0"))
    if old.get("status", {}).get("S") == LEASED and lease_until > 0:
        times.append(lease_until / 1000)
    return max(times, default=None)
