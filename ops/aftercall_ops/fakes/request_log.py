"""The request log of a loopback fake: every request it received (not the admin ones), how it was
answered, and counts by route and status, for tests to inspect while requests are in flight.

Why it is its own module: :class:`~aftercall_ops.fakes.http.FakeHttpService` serves requests; what
it keeps of them (bounded, without credentials, copied out under a lock) is a concern of its own.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter, deque
from typing import Any

from aftercall_ops.fakes.server import Request, RequestRecord

#: Request headers never written to the request log (credentials).
UNLOGGED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


class RequestLog:
    """The last ``size`` requests and the counts of all of them; every method takes the lock."""

    def __init__(self, size: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=size)
        self._by_route: Counter[str] = Counter()
        self._by_status: Counter[str] = Counter()

    def received(self, request: Request, body: Any) -> RequestRecord:
        """Log a request as it arrives (``body`` as it should be kept); returns its record."""
        record = RequestRecord(
            method=request.method,
            path=request.path,
            time=time.time(),
            received=time.monotonic(),
            body=body,
            query=request.query,
            headers={k: v for k, v in request.headers.items() if k not in UNLOGGED_HEADERS},
        )
        with self._lock:
            self._records.append(record)
            self._by_route[f"{request.method} {request.path}"] += 1
        return record

    def answered(self, record: RequestRecord, status: int | None) -> None:
        """Note the answer (``None``: the connection was dropped without one)."""
        with self._lock:
            record.answered = time.monotonic()
            if status is not None:
                record.status = status
                self._by_status[str(status)] += 1

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return [copy.copy(r) for r in self._records]

    def counts(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": sum(self._by_route.values()),
                "by_route": dict(self._by_route),
                "by_status": dict(self._by_status),
            }

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._by_route.clear()
            self._by_status.clear()
