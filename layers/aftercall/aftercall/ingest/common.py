"""Shared pieces of the vendor adapters: ids, times, numbers, state, and the final contract check.

Every adapter turns a vendor payload into a ``ConversationEndedDetail``-valid dict through
:func:`build_detail`, which validates with the contract model itself, so nothing that reaches the
bus can be refused later by the handler for its shape. The result depends only on the payload
(no clock, no randomness): the same webhook delivered twice yields byte-identical details, which
the handler's idempotency then processes once.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from aftercall.ingest.errors import PayloadError
from aftercall.models.event import (
    CONVERSATION_ID,
    E164,
    MAX_STATE_BYTES,
    SCHEMA_VERSION,
    ConversationEndedDetail,
    EndedReason,
)

#: Key under ``state`` holding what the platform reported about the call (never flattened).
PLATFORM_KEY = "_platform"
#: Plain-text transcripts longer than this are cut (the event must stay under 256 KB).
MAX_TRANSCRIPT_CHARS = 32_000
_ID_PATTERN = re.compile(CONVERSATION_ID)
_ID_ALLOWED = re.compile(r"[^A-Za-z0-9._:\-]")
_PHONE_JUNK = re.compile(r"[\s().\-]")


@dataclass(frozen=True)
class Normalised:
    """A vendor payload turned into a valid ``Conversation Ended`` detail."""

    platform: str
    detail: dict[str, Any]

    @property
    def conversation_id(self) -> str:
        return str(self.detail["conversation_id"])


@dataclass(frozen=True)
class Ignored:
    """A genuine payload that is not a conversation end (another event type): acknowledged, not put."""

    platform: str
    reason: str


# ---------------------------------------------------------------------------------------------- reading


def missing(field: str) -> PayloadError:
    return PayloadError("missing_field", f"{field} is missing or empty")


def invalid(field: str, expected: str) -> PayloadError:
    return PayloadError("invalid_field", f"{field} is not {expected}")


def as_object(value: Any, field: str) -> dict[str, Any]:
    """``value`` if it is a JSON object, ``{}`` if absent/null, otherwise a 422 naming ``field``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(field, "a JSON object")
    return value


def get_ci(mapping: Mapping[str, Any], *names: str) -> Any:
    """The first of ``names`` present in ``mapping``, ignoring key case (Connect mixes both casings)."""
    lowered = {key.lower(): value for key, value in mapping.items() if isinstance(key, str)}
    for name in names:
        value = lowered.get(name.lower())
        if value is not None:
            return value
    return None


def text(value: Any) -> str | None:
    """A non-empty stripped string, or None."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def conversation_id(raw: Any, field: str) -> str:
    """The vendor's call id as a contract-valid ``conversation_id``.

    Valid ids pass unchanged (``conv.id`` is the id the vendor's dashboard shows). Others have
    disallowed characters replaced by ``-`` and, because that could make two ids equal, gain
    a short hash of the original: deterministic, so duplicates still deduplicate.
    """
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    value = text(raw)
    if value is None:
        raise missing(field)
    if _ID_PATTERN.match(value):
        return value
    cleaned = _ID_ALLOWED.sub("-", value).lstrip("._:-")
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:12]
    return f"{cleaned[:100]}-{digest}" if cleaned else f"id-{digest}"


def from_iso(value: Any, field: str) -> datetime:
    """An ISO 8601 timestamp as an aware UTC datetime; one without a zone is taken as UTC."""
    raw = text(value)
    if raw is None:
        raise missing(field)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise invalid(field, "an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-14:00 is past the last moment UTC can hold
        raise invalid(field, "an ISO 8601 timestamp within years 1 to 9999 in UTC") from None


def from_epoch(value: Any, field: str, *, millis: bool) -> datetime:
    """A Unix timestamp (seconds or milliseconds) as an aware UTC datetime."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        if value is None:
            raise missing(field)
        raise invalid(field, "a Unix timestamp (number)")
    try:
        seconds = value / 1000 if millis else float(value)
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise invalid(field, "a Unix timestamp in range") from None


def number(value: Any, field: str) -> float | None:
    """A JSON number (not a boolean), None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(field, "a number")
    try:
        return float(value)
    except OverflowError:  # JSON integers have no limit; floats do
        raise invalid(field, "a number in range") from None


def phone(value: Any) -> str | None:
    """An E.164 number (spaces, dots, dashes and brackets removed) or None when it is not one."""
    raw = text(value)
    if raw is None:
        return None
    compact = _PHONE_JUNK.sub("", raw)
    return compact if E164.match(compact) else None


def transcript(value: str | None) -> tuple[str | None, bool]:
    """The transcript, cut at :data:`MAX_TRANSCRIPT_CHARS`; the flag says whether it was cut."""
    if value is None or not value.strip():
        return None, False
    if len(value) <= MAX_TRANSCRIPT_CHARS:
        return value, False
    return value[:MAX_TRANSCRIPT_CHARS], True


def merge_state(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Later layers win; ``None`` values and the reserved ``_platform`` key are not taken over."""
    state: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(key, str) and key != PLATFORM_KEY and value is not None:
                state[key] = value
    return state


def compact(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Drop ``None`` and empty containers, so ``_platform`` carries only what the vendor sent."""
    return {key: value for key, value in mapping.items() if value is not None and value != {} and value != []}


# ---------------------------------------------------------------------------------------------- the result


def build_detail(
    *,
    platform: str,
    conversation_id: str,
    environment: str,
    channel: str,
    direction: str,
    started_at: datetime,
    ended_at: datetime,
    duration_seconds: float | None,
    caller: str | None,
    callee: str | None,
    agent_id: str,
    ended_reason: EndedReason,
    ended_reason_raw: str | None,
    state: dict[str, Any],
    platform_info: Mapping[str, Any],
    customer_email: str | None = None,
) -> Normalised:
    """Assemble, validate with :class:`ConversationEndedDetail` and return the JSON-ready detail."""
    if ended_at < started_at:
        raise PayloadError("invalid_field", "the call's end time is before its start time")
    duration = duration_seconds if duration_seconds is not None else (ended_at - started_at).total_seconds()
    if duration < 0:
        raise invalid("duration", "zero or positive")
    full_state = dict(state)
    info = {"name": platform, **compact(platform_info)}
    full_state[PLATFORM_KEY] = info
    if "transcript" in info and json_size(full_state) > MAX_STATE_BYTES:
        # The transcript is the one thing that can go: the vendor keeps it, the recording URL points at it.
        info.pop("transcript")
        info.pop("transcript_truncated", None)
        info["transcript_dropped"] = True
    detail: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "conversation_id": conversation_id,
        "environment": environment,
        "channel": channel,
        "direction": direction,
        "started_at": started_at,
        "ended_at": ended_at,
        "duration_seconds": round(duration, 3),
        "caller": caller,
        "callee": callee,
        "customer_email": customer_email,
        "agent_id": agent_id[:128],
        "ended_reason": ended_reason,
        "ended_reason_raw": ended_reason_raw[:256] if ended_reason_raw else None,
        "state": full_state,
    }
    try:
        model = ConversationEndedDetail.model_validate(detail)
    except ValidationError as exc:
        from aftercall.handler import describe_validation_error

        raise PayloadError(
            "invalid_detail", f"the mapped event breaks the contract: {describe_validation_error(exc)}"
        ) from None
    dumped: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return Normalised(platform, dumped)


def map_reason(
    raw: str | None, exact: Mapping[str, EndedReason], prefixes: Iterable[tuple[str, EndedReason]] = ()
) -> EndedReason:
    """The contract's reason for a vendor's raw one: exact match, then prefix, else ``other``."""
    if raw is None:
        return "other"
    if raw in exact:
        return exact[raw]
    for prefix, reason in prefixes:
        if raw.startswith(prefix):
            return reason
    return "other"


def json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
