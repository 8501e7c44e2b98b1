"""Client-side pacing of CRM requests: token buckets per execution environment.

Every CRM publishes a request limit for an app (HubSpot private apps: 100 requests per 10 s on
Free/Starter) and answers 429 above it. Reserved concurrency alone does not keep a burst under
it: each environment sends as fast as its conversations allow. With ``CrmRateLimitPerSecond``
set, each environment takes an equal share of the limit (limit / reserved concurrency), so the
environments together never send more than the CRM accepts and a burst drains at the CRM's pace
instead of in 429 storms. See docs/performance.md, "Sizing reserved concurrency ...".

The bucket holds at most one second's worth of requests (at least one), refills at ``rate`` per
second, and hands out *reservations*: a caller takes the next slot and sleeps until it comes, so
the threads of one conversation's actions are served in order. A 429 with ``Retry-After``
:meth:`pauses <RateLimiter.pause>` the whole environment, and afterwards requests resume one
interval apart rather than in a burst.

HubSpot has two budgets: the general one (100 requests per rolling 10 s on Starter, shared by
every integration of the portal, so ``CrmRateLimitPerSecond`` is *our share* of it) and the search
one (4 requests per second per token, ``CrmSearchRateLimitPerSecond``). For HubSpot every
environment shares both through slots in DynamoDB (:mod:`aftercall.crm.search_slots`) instead of
equal per-environment buckets. A search takes a slot in both: its search slot first, then, once
that has come, a general one (a request counts in each window when it is sent). A 429 without
``Retry-After`` names its ``policyName``: ``SECONDLY`` frees within a second,
``TEN_SECONDLY_ROLLING`` when the oldest request of the window leaves it, which
:class:`RecentRequests` estimates from what this environment sent.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol


class Pacer(Protocol):
    """What paces requests: a per-environment :class:`RateLimiter`, or slots shared by every
    environment (:class:`aftercall.crm.search_slots.SharedSlots`)."""

    def reserve(self, max_wait: float) -> float | None: ...

    def pause(self, seconds: float) -> None: ...


class RateLimiter:
    """``reserve(max_wait)`` the next request slot; ``pause(seconds)`` after a 429.

    ``clock`` is a monotonic clock in seconds (injected by tests; nothing here sleeps).
    """

    def __init__(self, rate: float, burst: float | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not rate > 0 or math.isinf(rate):
            raise ValueError(f"the rate must be a positive number of requests per second, got {rate!r}")
        self.rate = float(rate)
        self.burst = max(1.0, self.rate if burst is None else float(burst))
        self._interval = 1.0 / self.rate
        #: How far ahead of "now" the schedule may run before a request has to wait (the burst).
        self._tolerance = (self.burst - 1.0) * self._interval
        self._clock = clock
        self._lock = threading.Lock()
        #: The generic cell rate algorithm's "theoretical arrival time": when the slots handed out so
        #: far would be used up at one per interval. A request may go once now >= this - tolerance.
        self._tat = -math.inf

    def reserve(self, max_wait: float) -> float | None:
        """Take the next slot: the seconds to wait before sending (0.0: now). ``None`` when the slot
        is more than ``max_wait`` seconds away; then nothing is taken."""
        with self._lock:
            now = self._clock()
            start = max(now, self._tat - self._tolerance)
            wait = start - now
            if wait > max_wait:
                return None
            self._tat = max(self._tat, now) + self._interval
            return wait

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` from now (the CRM's ``Retry-After``), then one interval apart."""
        if seconds <= 0:
            return
        with self._lock:
            until = self._clock() + seconds
            # The first slot after the pause is `until` itself; the bucket starts empty there.
            self._tat = max(self._tat, until + self._tolerance)


def share(limit_per_second: float | None, concurrency: int, burst: float | None = None) -> RateLimiter | None:
    """This environment's limiter: an equal share of the CRM's limit (``None`` when no limit is set).

    ``burst``: requests it may send at once before pacing (default: one second's worth, at least one).
    """
    if limit_per_second is None or limit_per_second <= 0:
        return None
    if concurrency < 1:
        raise ValueError(f"the concurrency must be at least 1, got {concurrency}")
    return RateLimiter(limit_per_second / concurrency, burst)


class RecentRequests:
    """When this environment sent its requests over the last ``window`` seconds (a rolling window)."""

    def __init__(self, window: float = 10.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def sent(self) -> None:
        with self._lock:
            now = self._clock()
            self._sent.append(now)
            self._trim(now)

    def until_one_frees(self, window: float | None = None) -> float:
        """Seconds until the oldest request sent in the window leaves it (the whole window if none is known)."""
        span = self.window if window is None else window
        with self._lock:
            now = self._clock()
            self._trim(now)
            inside = [at for at in self._sent if at > now - span]
        if not inside:
            return span
        return max(0.0, inside[0] + span - now)

    def _trim(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - max(self.window, 10.0):
            self._sent.popleft()
