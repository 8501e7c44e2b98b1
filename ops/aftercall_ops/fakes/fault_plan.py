"""What a loopback fake does to a request before its API sees it: the fault rules it meets, and the
global rate limit it may be over.

Why it is its own module: :class:`~aftercall_ops.fakes.http.FakeHttpService` serves requests; which
rule applies (in order, consumed, drawn from a seeded RNG so a run is reproducible) and whether a
token is free are decisions of their own, kept here with their own lock.
"""

from __future__ import annotations

import copy
import math
import random
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aftercall_ops.fakes.faults import Fault


class FaultPlan:
    """The fault rules of one fake, tried in the order they were added; exhausted ones are dropped."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []
        self._rng = random.Random(seed)

    def add(self, rules: Iterable[Fault | Mapping[str, Any]]) -> list[Fault]:
        """Add rules given as :class:`Fault` objects or their JSON form."""
        faults = [rule if isinstance(rule, Fault) else Fault.from_json(rule) for rule in rules]
        with self._lock:
            self._rules.extend(faults)
        return faults

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[Fault]:
        """Copies of the rules still active."""
        with self._lock:
            return [copy.copy(f) for f in self._rules]

    def pick(self, method: str, path: str) -> tuple[list[Fault], Fault | None]:
        """The latency rules and the first other rule that apply to this request (consumed)."""
        latency: list[Fault] = []
        chosen: Fault | None = None
        with self._lock:
            for fault in self._rules:
                if fault.exhausted or not fault.matches(method, path):
                    continue
                if fault.kind != "latency" and chosen is not None:
                    continue
                if fault.probability is not None and self._rng.random() >= fault.probability:
                    continue
                fault.applied += 1
                if fault.kind == "latency":
                    latency.append(fault)
                else:
                    chosen = fault
            self._rules = [f for f in self._rules if not f.exhausted]
        return latency, chosen


class TokenBucket:
    """A fake's global rate limit: ``per_second`` requests, with one second's burst (``None``: no limit)."""

    def __init__(self, per_second: float | None = None, retry_after: float | None = None) -> None:
        self._lock = threading.Lock()
        self.per_second: float | None = None
        self._retry_after: float | None = None
        self._tokens = 0.0
        self._filled_at = time.monotonic()
        self.configure(per_second, retry_after)

    def configure(self, per_second: float | None, retry_after: float | None = None) -> None:
        """Set the limit and refill the bucket (:meth:`FakeHttpService.set_rate_limit` says how)."""
        if per_second is not None and per_second <= 0:
            raise ValueError("rate_limit_per_second must be positive (or None for no limit)")
        with self._lock:
            self.per_second = per_second
            self._retry_after = retry_after
            self._tokens = max(1.0, per_second or 0.0)
            self._filled_at = time.monotonic()

    def take(self) -> str | None:
        """``None`` when the request may pass, else the ``Retry-After`` value to answer with."""
        with self._lock:
            rate = self.per_second
            if rate is None:
                return None
            now = time.monotonic()
            self._tokens = min(max(1.0, rate), self._tokens + (now - self._filled_at) * rate)
            self._filled_at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return None
            wait = (1.0 - self._tokens) / rate
            retry_after = self._retry_after
        return f"{retry_after:g}" if retry_after is not None else str(max(1, math.ceil(wait)))
