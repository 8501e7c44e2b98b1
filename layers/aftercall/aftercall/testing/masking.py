"""Showing what the kit recorded: personal data and secrets masked, dataclasses as JSON data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any

from aftercall.privacy import redact

#: Secret-looking keys whose values never appear in what is shown.
_SECRET_KEYS = frozenset({"client_secret", "access_token", "api_token", "signing_secret", "password"})


def mask(value: Any) -> Any:
    """``value`` with phone numbers, emails and secrets masked in every string (for showing it)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: "***" if str(k).lower() in _SECRET_KEYS else mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(item) for item in value]
    return value


def plain(value: Any) -> Any:
    """Dataclasses, datetimes and tuples as JSON data."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value
