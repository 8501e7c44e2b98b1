"""ElevenLabs Agents ``post_call_transcription`` webhooks → ``Conversation Ended``.

The payload is ``{"type", "event_timestamp", "data"}`` where ``data`` is the Conversation API's
conversation object. ``post_call_audio`` and ``call_initiation_failure`` are acknowledged and
ignored (audio only; a call that never started). ElevenLabs reports the end reason as free text
(``metadata.termination_reason``); it is matched by pattern and always kept raw.
"""

from __future__ import annotations

import re
from typing import Any

from aftercall.ingest.common import (
    Ignored,
    Normalised,
    as_object,
    build_detail,
    conversation_id,
    from_epoch,
    merge_state,
    missing,
    number,
    phone,
    text,
    transcript,
)
from aftercall.models.event import EndedReason

PLATFORM = "elevenlabs"
TAKEN_TYPE = "post_call_transcription"
SYSTEM_PREFIX = "system__"

#: Free-text termination reasons, matched case-insensitively in order; anything else is ``other``.
REASON_PATTERNS: tuple[tuple[re.Pattern[str], EndedReason], ...] = (
    (re.compile(r"voicemail", re.I), "voicemail"),
    (re.compile(r"transfer", re.I), "transferred"),
    (re.compile(r"end_call tool|agent ended|agent hung up", re.I), "agent_hangup"),
    (re.compile(r"remote party|client disconnected|user ended|user hung up|caller hung up", re.I), "customer_hangup"),
    (re.compile(r"max(imum)?[ _]duration|time(d)? ?out|silence|inactiv", re.I), "timeout"),
    (re.compile(r"busy", re.I), "busy"),
    (re.compile(r"no[ _-]answer", re.I), "no_answer"),
    (re.compile(r"error|fail", re.I), "failed"),
)


def ended_reason(raw: str | None, status: str | None) -> EndedReason:
    """``completed`` for an empty reason on a finished call, else the first matching pattern, else ``other``."""
    if status == "failed":
        return "failed"
    if raw is None:
        return "completed"
    for pattern, reason in REASON_PATTERNS:
        if pattern.search(raw):
            return reason
    return "other"


def _plain_transcript(turns: Any) -> str | None:
    if not isinstance(turns, list):
        return None
    lines = [
        f"{turn.get('role', '?')}: {turn['message']}"
        for turn in turns
        if isinstance(turn, dict) and isinstance(turn.get("message"), str) and turn["message"].strip()
    ]
    return "\n".join(lines) or None


def _collected(results: dict[str, Any]) -> dict[str, Any]:
    """``data_collection_results`` is ``{id: {value, rationale, ...}}``: state gets ``{id: value}``."""
    return {
        key: item["value"] for key, item in results.items() if isinstance(item, dict) and item.get("value") is not None
    }


def normalise(payload: Any, environment: str) -> Normalised | Ignored:
    """One ElevenLabs webhook → a detail, or :class:`Ignored` for the other webhook types."""
    root = as_object(payload, "body")
    kind = text(root.get("type"))
    if kind is None:
        raise missing("type")
    if kind != TAKEN_TYPE:
        return Ignored(PLATFORM, f"type is {kind!r}; aftercall takes {TAKEN_TYPE}")
    data = as_object(root.get("data"), "data")
    call_id = conversation_id(data.get("conversation_id"), "data.conversation_id")
    agent_id = text(data.get("agent_id"))
    if agent_id is None:
        raise missing("data.agent_id")
    metadata = as_object(data.get("metadata"), "data.metadata")

    start = metadata.get("start_time_unix_secs")
    if start is None:
        raise missing("data.metadata.start_time_unix_secs")
    started_at = from_epoch(start, "data.metadata.start_time_unix_secs", millis=False)
    duration = number(metadata.get("call_duration_secs"), "data.metadata.call_duration_secs") or 0.0
    ended_at = from_epoch(start + duration, "data.metadata.call_duration_secs", millis=False)

    client = as_object(data.get("conversation_initiation_client_data"), "data.conversation_initiation_client_data")
    variables = as_object(client.get("dynamic_variables"), "data.conversation_initiation_client_data.dynamic_variables")
    call = as_object(metadata.get("phone_call"), "data.metadata.phone_call")
    direction = text(call.get("direction"))
    direction = direction if direction in ("inbound", "outbound") else "inbound"
    customer = phone(call.get("external_number")) or phone(variables.get("system__caller_id"))
    agent_number = phone(call.get("agent_number")) or phone(variables.get("system__called_number"))
    caller, callee = (customer, agent_number) if direction == "inbound" else (agent_number, customer)

    raw_reason = text(metadata.get("termination_reason"))
    status = text(data.get("status"))
    analysis = as_object(data.get("analysis"), "data.analysis")
    derived = {
        "summary": text(analysis.get("transcript_summary")),
        "call_successful": text(analysis.get("call_successful")),
    }
    user_variables = {key: value for key, value in variables.items() if not key.startswith(SYSTEM_PREFIX)}
    state = merge_state(
        user_variables,
        derived,
        _collected(as_object(analysis.get("data_collection_results"), "data.analysis.data_collection_results")),
    )
    plain, cut = transcript(_plain_transcript(data.get("transcript")))
    platform_info: dict[str, Any] = {
        "conversation_id": text(data.get("conversation_id")),
        "status": status,
        "ended_reason": raw_reason,
        "user_id": text(data.get("user_id")),
        "evaluation": as_object(
            analysis.get("evaluation_criteria_results"), "data.analysis.evaluation_criteria_results"
        ),
        "cost": metadata.get("cost"),
        "call_sid": text(call.get("call_sid")),
        "transcript": plain,
        "transcript_truncated": True if cut else None,
    }
    return build_detail(
        platform=PLATFORM,
        conversation_id=call_id,
        environment=environment,
        channel="voice",
        direction=direction,
        started_at=started_at,
        ended_at=ended_at,
        duration_seconds=duration,
        caller=caller,
        callee=callee,
        agent_id=agent_id,
        ended_reason=ended_reason(raw_reason, status),
        ended_reason_raw=raw_reason,
        state=state,
        platform_info=platform_info,
    )
