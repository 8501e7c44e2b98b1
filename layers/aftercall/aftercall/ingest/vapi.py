"""Vapi ``end-of-call-report`` server messages → ``Conversation Ended``.

Vapi POSTs ``{"message": {...}}`` to the server URL for many message types (status updates,
transcripts, tool calls …); only ``end-of-call-report`` ends a call, the others are acknowledged
and ignored. Field names follow Vapi's OpenAPI (``ServerMessageEndOfCallReport``, ``Call``,
``Artifact``); the mapping is documented in docs/ingest.md.
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
    from_iso,
    map_reason,
    merge_state,
    missing,
    number,
    phone,
    text,
    transcript,
)
from aftercall.models.event import EndedReason

PLATFORM = "vapi"

ENDED_REASONS: dict[str, EndedReason] = {
    "customer-ended-call": "customer_hangup",
    "assistant-ended-call": "agent_hangup",
    "assistant-said-end-call-phrase": "agent_hangup",
    "assistant-ended-call-with-hangup-task": "agent_hangup",
    "assistant-ended-call-after-message-spoken": "agent_hangup",
    "assistant-forwarded-call": "transferred",
    "customer-busy": "busy",
    "customer-did-not-answer": "no_answer",
    "voicemail": "voicemail",
    "silence-timed-out": "timeout",
    "exceeded-max-duration": "timeout",
    "assistant-join-timed-out": "timeout",
    "call.in-progress.twilio-completed-call": "completed",
    "call.in-progress.sip-completed-call": "completed",
    "vonage-completed": "completed",
    "twilio-failed-to-connect-call": "failed",
    "vonage-failed-to-connect-call": "failed",
    "vonage-rejected": "failed",
    "worker-shutdown": "failed",
    "phone-call-provider-closed-websocket": "failed",
}
#: Families of Vapi reasons (hundreds of provider-specific errors) by prefix, checked in order.
REASON_PREFIXES: tuple[tuple[str, EndedReason], ...] = (
    ("customer-ended-call", "customer_hangup"),
    ("pipeline-error-", "failed"),
    ("call.start.error-", "failed"),
    ("call.in-progress.error-", "failed"),
    ("call.ringing.error-", "failed"),
    ("call-start-error-", "failed"),
    ("assistant-request-", "failed"),
)

CALL_TYPES = {
    "inboundPhoneCall": "inbound",
    "outboundPhoneCall": "outbound",
    "webCall": "inbound",
    "vapi.websocketCall": "inbound",
}


def _structured_outputs(artifact: dict[str, Any]) -> dict[str, Any]:
    """``artifact.structuredOutputs`` is ``{id: {name, result}}``: state gets ``{name: result}``."""
    outputs = as_object(artifact.get("structuredOutputs"), "message.artifact.structuredOutputs")
    collected: dict[str, Any] = {}
    for output_id, output in outputs.items():
        if isinstance(output, dict) and "result" in output:
            name = text(output.get("name")) or output_id
            collected[name] = output["result"]
    return collected


def normalise(payload: Any, environment: str) -> Normalised | Ignored:
    """One Vapi server message → a detail, or :class:`Ignored` for message types that are not call ends."""
    root = as_object(payload, "body")
    message = as_object(root.get("message"), "message")
    if not message:
        raise missing("message")
    kind = text(message.get("type"))
    if kind != "end-of-call-report":
        return Ignored(PLATFORM, f"message.type is {kind!r}; aftercall takes end-of-call-report only")
    call = as_object(message.get("call"), "message.call")
    call_id = conversation_id(call.get("id"), "message.call.id")

    direction = CALL_TYPES.get(text(call.get("type")) or "", "inbound")
    customer = as_object(message.get("customer"), "message.customer") or as_object(
        call.get("customer"), "message.call.customer"
    )
    number_info = as_object(message.get("phoneNumber"), "message.phoneNumber") or as_object(
        call.get("phoneNumber"), "message.call.phoneNumber"
    )
    customer_number, agent_number = phone(customer.get("number")), phone(number_info.get("number"))
    caller, callee = (customer_number, agent_number) if direction == "inbound" else (agent_number, customer_number)

    started_raw = message.get("startedAt") or call.get("startedAt")
    ended_raw = message.get("endedAt") or call.get("endedAt")
    if ended_raw is None and message.get("timestamp") is not None:
        ended_at = from_epoch(message.get("timestamp"), "message.timestamp", millis=True)
    else:
        ended_at = from_iso(ended_raw, "message.endedAt")
    started_at = from_iso(started_raw, "message.startedAt") if started_raw is not None else ended_at
    duration = number(message.get("durationSeconds"), "message.durationSeconds")

    assistant = as_object(message.get("assistant"), "message.assistant")
    agent_id = (
        text(assistant.get("id"))
        or text(call.get("assistantId"))
        or text(assistant.get("name"))
        or "vapi-transient-assistant"
    )

    raw_reason = text(message.get("endedReason")) or text(call.get("endedReason"))
    reason: EndedReason = map_reason(raw_reason, ENDED_REASONS, REASON_PREFIXES) if raw_reason else "completed"

    analysis = as_object(message.get("analysis"), "message.analysis")
    artifact = as_object(message.get("artifact"), "message.artifact")
    overrides = as_object(call.get("assistantOverrides"), "message.call.assistantOverrides")
    variables = as_object(artifact.get("variableValues"), "message.artifact.variableValues") or as_object(
        overrides.get("variableValues"), "message.call.assistantOverrides.variableValues"
    )
    structured_data = analysis.get("structuredData")
    derived = {"summary": text(analysis.get("summary")), "call_successful": analysis.get("successEvaluation")}
    state = merge_state(
        variables,
        derived,
        structured_data if isinstance(structured_data, dict) else None,
        _structured_outputs(artifact),
    )
    plain, cut = transcript(text(message.get("transcript")) or text(artifact.get("transcript")))
    platform_info: dict[str, Any] = {
        "call_id": text(call.get("id")),
        "call_type": text(call.get("type")),
        "ended_reason": raw_reason,
        "cost": message.get("cost"),
        "recording_url": text(message.get("recordingUrl")) or text(artifact.get("recordingUrl")),
        "stereo_recording_url": text(message.get("stereoRecordingUrl")),
        "compliance": message.get("compliance"),
        "structured_data": structured_data
        if structured_data is not None and not isinstance(structured_data, dict)
        else None,
        "transcript": plain,
        "transcript_truncated": True if cut else None,
        "assistant_name": text(assistant.get("name")),
    }
    if customer_number is None and text(customer.get("number")):
        platform_info["unparsed_customer_number"] = text(customer.get("number"))
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
