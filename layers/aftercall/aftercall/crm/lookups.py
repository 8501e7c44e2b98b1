"""Shared lookups: a warm process's cache of CRM record ids, looked up once at a time per key.

The actions of one conversation run concurrently and most of them need the same record (the
customer's contact). Without sharing, each would send its own search at the same moment: no
faster (they run side by side), but N times the search traffic, and CRM search APIs are the most
rate-limited ones (HubSpot: a few requests per second per account). With sharing, the first
caller searches and the others wait for its answer, or its error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from aftercall.errors import CrmUnavailableError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _InFlight(Generic[V]):
    """One lookup in progress: its outcome, once known, for every caller waiting on it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: V | None = None
        self.error: BaseException | None = None


class SharedLookups(Generic[K, V]):
    """``get(key, lookup, wait)``: the cached id, or one ``lookup()`` shared by concurrent callers.

    Only successes are cached (at most ``max_entries``, then the cache starts over); an error is
    handed to the callers that waited for that lookup, and the next caller looks up again.
    """

    def __init__(self, max_entries: int = 1024) -> None:
        self._max_entries = max_entries
        self._found: dict[K, V] = {}
        self._in_flight: dict[K, _InFlight[V]] = {}
        self._lock = threading.Lock()

    def get(self, key: K, lookup: Callable[[], V], wait_seconds: float) -> V:
        with self._lock:
            found = self._found.get(key)
            if found is not None:
                return found
            flight = self._in_flight.get(key)
            leader = flight is None
            if flight is None:
                flight = self._in_flight[key] = _InFlight[V]()
        if not leader:
            return self._wait(flight, wait_seconds)
        try:
            value = lookup()
        except BaseException as exc:
            with self._lock:
                del self._in_flight[key]
            flight.error = exc
            flight.done.set()
            raise
        with self._lock:
            if len(self._found) >= self._max_entries:
                self._found.clear()
            self._found[key] = value
            del self._in_flight[key]
        flight.value = value
        flight.done.set()
        return value

    @staticmethod
    def _wait(flight: _InFlight[V], wait_seconds: float) -> V:
        if not flight.done.wait(max(0.0, wait_seconds)):
            raise CrmUnavailableError("gave up waiting for a concurrent lookup of the same record (deadline)")
        if flight.error is not None:
            raise flight.error
        assert flight.value is not None
        return flight.value
