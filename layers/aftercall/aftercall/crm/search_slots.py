"""HubSpot's limits shared by every execution environment: one DynamoDB item per time slot.

"Search endpoints are rate limited to four requests per second per authentication token": a
sliding one-second window that all of the function's concurrent environments fill together. An
equal share per environment (as for the general budget) cannot keep the sum under it: paced
environments that happen to search in the same second still send five. So searches take a slot:
time is cut into slots of ``1 / per_second`` seconds, and a search may go only in a slot it
claimed with a conditional put (``attribute_not_exists``) of the item ``rate#<name>#<slot>`` in the
idempotency table. One search per slot of a third of a second (``per_second`` 3) puts at most
four in any one-second window. A claim is one small write; items expire after a minute.

The general budget (100 requests per *rolling* 10 s on Starter) is shared the same way
(``CrmRateLimitPerSecond``, name ``hubspot-general``): split into equal per-environment shares,
an idle environment's share goes unused while the busy ones wait, and each environment's own burst
allowance adds up across environments inside one window. One slot of ``1 / limit`` seconds per
request, claimed by whichever environment needs it, keeps the whole function at the limit and
under it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from aftercall import aws

#: Slots tried in one reservation before giving up (each try is one conditional write).
MAX_TRIES = 40


class SharedSlots:
    """``reserve(max_wait)``: claim the next free slot shared with every environment that has not
    begun yet; seconds to wait until it begins (``None``: none free within ``max_wait``).
    ``pause(seconds)``: after a 429.

    ``whole_window``: the slots fill the limit's whole window (the general budget: 100 slots of
    0.1 s per rolling 10 s), so a request goes at the very start of its slot, never later in one
    already begun: one sent late in its slot and the one a window later early in theirs would put
    one request too many in that window. Searches pace below their limit (3 slots per second for 4
    allowed), which leaves room for a request sent in the first half of a begun slot: five
    searches then span at least 3.5 slots (1.17 s), a margin for the network's jitter."""

    def __init__(
        self,
        table_name: str,
        name: str,
        per_second: float,
        *,
        whole_window: bool = False,
        client: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not per_second > 0 or math.isinf(per_second):
            raise ValueError(f"per_second must be a positive number, got {per_second!r}")
        self.table_name = table_name
        self.name = name
        self.width = 1.0 / per_second
        self.whole_window = whole_window
        self._client = client
        self._clock = clock
        self._lock = threading.Lock()
        #: No slot before this one (epoch seconds): after a 429, and past slots already seen taken.
        self._not_before = 0.0

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("dynamodb")
        return self._client

    def reserve(self, max_wait: float) -> float | None:
        now = self._clock()
        with self._lock:
            start = max(now, self._not_before)
        # The slot already begun, unless the whole window is paced or it is more than half gone.
        slot = math.floor(start / self.width)
        if start > slot * self.width and (self.whole_window or start - slot * self.width > self.width / 2):
            slot += 1
        for _ in range(MAX_TRIES):
            begins = max(slot * self.width, now)
            if begins - now > max_wait:
                return None
            if self._claim(slot):
                with self._lock:
                    self._not_before = max(self._not_before, (slot + 1) * self.width)
                return begins - now
            slot += 1
        return None

    def pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._lock:
            self._not_before = max(self._not_before, self._clock() + seconds)

    def _claim(self, slot: int) -> bool:
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item={
                    "id": {"S": f"rate#{self.name}#{slot}"},
                    "expiration": {"N": str(int(self._clock()) + 60)},
                },
                ConditionExpression="attribute_not_exists(id)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return False
        return True
