"""The invocation's time budget, passed explicitly so nothing waits past Lambda's deadline."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class HasRemainingTime(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


@dataclass(frozen=True)
class Deadline:
    """A point in time (monotonic and wall clock) after which work must not start."""

    monotonic_at: float
    epoch_ms: int

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, int((time.time() + seconds) * 1000))

    @classmethod
    def from_context(cls, context: HasRemainingTime) -> Deadline:
        return cls.after(context.get_remaining_time_in_millis() / 1000)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.monotonic_at - time.monotonic())
