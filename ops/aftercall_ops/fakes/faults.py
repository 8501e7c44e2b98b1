"""The faults a loopback fake can inject, as rules matched by method and path.

5xx, rate limits with ``Retry-After`` (429, or a service's own status such as Salesforce's 403),
hanging past a client's timeout, resetting the connection, applying a write and then answering 500
(the ambiguous case), added latency, and an answer whose body trickles in a byte at a time.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

FaultKind = Literal["status", "rate_limit", "hang", "reset", "after_commit_status", "latency", "trickle"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)


def path_matches(pattern: str, path: str) -> bool:
    """A path prefix, or an exact path when ``pattern`` ends with ``$``.

    ``/crm/v3/objects/notes`` also matches ``/crm/v3/objects/notes/search``; write
    ``/crm/v3/objects/notes$`` to hit only the create.
    """
    if pattern.endswith("$"):
        return path == pattern[:-1]
    return path.startswith(pattern)


@dataclass
class Fault:
    """One fault rule. It matches requests by ``method`` and ``path`` (both optional; the path
    is a prefix, or exact when it ends with ``$``, see :func:`path_matches`).

    ``times`` bounds how many requests it applies to (``None``: forever); ``probability`` makes
    it apply to a random share of matching requests (drawn from the server's seeded RNG, so a
    run is reproducible). Per kind:

    * ``status``: answer ``status`` (default 500) with ``body`` (default the service's error).
    * ``rate_limit``: answer ``status`` (default the service's rate-limit status: 429, or 403
      for Salesforce) with ``Retry-After: retry_after`` (omitted when ``None``).
    * ``hang``: wait ``seconds`` then answer normally, or with ``then="never"`` keep the
      connection open without answering until the server stops (exceeds any client timeout).
    * ``reset``: read the request, then close the socket with an RST (``SO_LINGER`` 0).
    * ``after_commit_status``: perform the request (the write is applied), then answer
      ``status`` (default 500): the client cannot tell whether it happened.
    * ``latency``: answer normally after ``ms`` milliseconds. Latency rules stack with the one
      other rule that may apply to the same request.
    * ``trickle``: perform the request, send the status line and headers at once, then the body
      one byte every ``interval`` seconds. A client whose read timeout applies to each read
      (``requests``, urllib3) never times out while bytes keep coming: the call lasts as long as
      the body takes, past any deadline of the caller's own.
    """

    kind: FaultKind
    method: str | None = None
    path: str | None = None
    times: int | None = None
    probability: float | None = None
    status: int | None = None
    body: Any = None
    retry_after: str | None = "1"
    seconds: float = 30.0
    then: Literal["answer", "never"] = "answer"
    ms: float = 0.0
    interval: float = 0.5
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    applied: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {', '.join(FAULT_KINDS)}")
        if self.method is not None:
            self.method = self.method.upper()
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if self.then not in ("answer", "never"):
            raise ValueError("then must be 'answer' or 'never'")
        if self.retry_after is not None and not isinstance(self.retry_after, str):
            self.retry_after = f"{self.retry_after:g}" if isinstance(self.retry_after, float) else str(self.retry_after)
        if self.status is not None and not 100 <= int(self.status) <= 599:
            raise ValueError(f"status {self.status} is not an HTTP status")
        if not self.interval > 0:
            raise ValueError("interval must be positive")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        """A rule from its JSON form (the ``/__admin/faults`` body); unknown keys are refused."""
        known = {f for f in cls.__dataclass_fields__ if f not in ("id", "applied")}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        if "kind" not in data:
            raise ValueError("a fault rule needs a 'kind'")
        return cls(**dict(data))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.applied >= self.times

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path is None or path_matches(self.path, path)
