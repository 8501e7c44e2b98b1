"""Retell ``call_analyzed`` webhooks → ``Conversation Ended``.

Retell sends ``{"event": ..., "call": {...}}`` for ``call_started``, ``call_ended``,
``call_analyzed`` and transfer events. Only ``call_analyzed`` is taken: it carries the whole call
object *and* ``call_analysis``; ``call_ended`` for the same call would carry different content
under the same id, which the handler would (rightly) report as a conflicting duplicate. Every
other event is acknowledged and ignored. Field names follow Retell's call object (get-call).
"""

from __future__ import annotations

from typing import Any

from aftercall.ingest.common import (
    Ignored,
    Normalised,
    as_object,
    build_detail,
    conversation_id,
    from_epoch,
    map_reason,
    merge_state,
    missing,
    number,
    phone,
    text,
    transcript,
)
from aftercall.models.event import EndedReason

PLATFORM = "retell"
TAKEN_EVENT = "call_analyzed"

ENDED_REASONS: dict[str, EndedReason] = {
    "user_hangup": "customer_hangup",
    "agent_hangup": "agent_hangup",
    "call_transfer": "transferred",
    "voicemail_reached": "voicemail",
    "inactivity": "timeout",
    "max_duration_reached": "timeout",
    "registered_call_timeout": "timeout",
    "dial_busy": "busy",
    "dial_no_answer": "no_answer",
    "dial_failed": "failed",
    "invalid_destination": "failed",
    "telephony_provider_permission_denied": "failed",
    "telephony_provider_unavailable": "failed",
    "sip_routing_error": "failed",
    "marked_as_spam": "failed",
    "concurrency_limit_reached": "failed",
    "no_valid_payment": "failed",
    "scam_detected": "failed",
}
REASON_PREFIXES: tuple[tuple[str, EndedReason], ...] = (("error_", "failed"),)


def normalise(payload: Any, environment: str) -> Normalised | Ignored:
    """One Retell webhook → a detail, or :class:`Ignored` for events other than ``call_analyzed``."""
    root = as_object(payload, "body")
    event = text(root.get("event"))
    if event is None:
        raise missing("event")
    if event != TAKEN_EVENT:
        return Ignored(PLATFORM, f"event is {event!r}; aftercall takes {TAKEN_EVENT} (it carries call_analysis)")
    call = as_object(root.get("call"), "call")
    call_id = conversation_id(call.get("call_id"), "call.call_id")
    agent_id = text(call.get("agent_id"))
    if agent_id is None:
        raise missing("call.agent_id")

    call_type = text(call.get("call_type"))
    direction = text(call.get("direction")) if call_type == "phone_call" else None
    direction = direction if direction in ("inbound", "outbound") else "inbound"
    # Retell's from/to are the calling and called numbers whatever the direction.
    caller, callee = phone(call.get("from_number")), phone(call.get("to_number"))

    end_ms = call.get("end_timestamp")
    start_ms = call.get("start_timestamp")
    if end_ms is None:
        raise missing("call.end_timestamp")
    ended_at = from_epoch(end_ms, "call.end_timestamp", millis=True)
    started_at = from_epoch(start_ms, "call.start_timestamp", millis=True) if start_ms is not None else ended_at
    duration_ms = number(call.get("duration_ms"), "call.duration_ms")
    duration = duration_ms / 1000 if duration_ms is not None else None

    raw_reason = text(call.get("disconnection_reason"))
    reason: EndedReason = map_reason(raw_reason, ENDED_REASONS, REASON_PREFIXES) if raw_reason else "completed"

    analysis = as_object(call.get("call_analysis"), "call.call_analysis")
    derived = {
        "summary": text(analysis.get("call_summary")),
        "sentiment": text(analysis.get("user_sentiment")),
        "call_successful": analysis.get("call_successful"),
    }
    state = merge_state(
        as_object(call.get("retell_llm_dynamic_variables"), "call.retell_llm_dynamic_variables"),
        derived,
        as_object(analysis.get("custom_analysis_data"), "call.call_analysis.custom_analysis_data"),
        as_object(call.get("collected_dynamic_variables"), "call.collected_dynamic_variables"),
    )
    cost = as_object(call.get("call_cost"), "call.call_cost")
    plain, cut = transcript(text(call.get("transcript")))
    platform_info: dict[str, Any] = {
        "call_id": text(call.get("call_id")),
        "call_type": call_type,
        "call_status": text(call.get("call_status")),
        "agent_version": call.get("agent_version"),
        "ended_reason": raw_reason,
        "in_voicemail": analysis.get("in_voicemail"),
        "metadata": as_object(call.get("metadata"), "call.metadata"),
        "cost": cost.get("combined_cost"),
        "recording_url": text(call.get("recording_url")),
        "public_log_url": text(call.get("public_log_url")),
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
        ended_reason=reason,
        ended_reason_raw=raw_reason,
        state=state,
        platform_info=platform_info,
    )
