"""A client for a running fake's ``/__admin/`` endpoints, for other processes (CLI, demo)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlsplit


class FakeAdmin:
    """Drive a running fake from another process (CLI, demo) through ``/__admin/``."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not a fake service URL: {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, route: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            f"{self.url}/__admin/{route}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - scheme checked
            payload = response.read()
        return json.loads(payload) if payload else None

    def state(self) -> dict[str, Any]:
        return cast("dict[str, Any]", self._call("GET", "state"))

    def requests(self) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", self._call("GET", "requests"))

    def add_faults(self, rules: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", self._call("POST", "faults", list(rules)))

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def set_rate_limit(self, per_second: float | None, retry_after: float | None = None) -> None:
        self._call("POST", "config", {"rate_limit_per_second": per_second, "rate_limit_retry_after": retry_after})

    def reset(self) -> None:
        self._call("POST", "reset")
