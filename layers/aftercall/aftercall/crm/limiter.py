"""Client-side pacing of CRM requests: one token bucket per execution environment.

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
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


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


def share(limit_per_second: float | None, concurrency: int) -> RateLimiter | None:
    """This environment's limiter: an equal share of the CRM's limit (``None`` when no limit is set)."""
    if limit_per_second is None or limit_per_second <= 0:
        return None
    if concurrency < 1:
        raise ValueError(f"the concurrency must be at least 1, got {concurrency}")
    return RateLimiter(limit_per_second / concurrency)
