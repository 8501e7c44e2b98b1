"""Amazon Connect ``DISCONNECTED`` contact events (from the default bus) → ``Conversation Ended``.

Connect publishes "Amazon Connect Contact Event"s to the account's default EventBridge bus; a rule
in template.yaml sends the DISCONNECTED ones here. The contact events data model mixes key
casings (``agentInfo`` and ``AgentInfo``, ``Voice`` and ``VOICE``), so every key is read ignoring
case. Each contact leg (transfers create new contact ids) becomes its own conversation; the ids
that link the legs are kept in ``state._platform``. Task contacts and supervisor (MONITOR) legs
are not conversations and are ignored.
"""

from __future__ import annotations

from typing import Any

from aftercall.ingest.common import (
    Ignored,
    Normalised,
    as_object,
    build_detail,
    conversation_id,
    from_iso,
    get_ci,
    merge_state,
    missing,
    phone,
    text,
)
from aftercall.models.event import EndedReason

PLATFORM = "connect"
SOURCE = "aws.connect"
DETAIL_TYPE = "Amazon Connect Contact Event"
TAKEN_EVENT = "DISCONNECTED"

CHANNELS = {"VOICE": "voice", "CHAT": "chat", "EMAIL": "email"}
OUTBOUND_METHODS = {"OUTBOUND", "CALLBACK", "EXTERNAL_OUTBOUND"}
IGNORED_METHODS = {"MONITOR"}

DISCONNECT_REASONS: dict[str, EndedReason] = {
    "CUSTOMER_DISCONNECT": "customer_hangup",
    "AGENT_DISCONNECT": "agent_hangup",
    "CONTACT_FLOW_DISCONNECT": "agent_hangup",
    "TELECOM_PROBLEM": "failed",
    "OUTBOUND_DESTINATION_ENDPOINT_ERROR": "failed",
    "OUTBOUND_RESOURCE_ERROR": "failed",
    "OUTBOUND_ATTEMPT_FAILED": "failed",
    "EXPIRED": "timeout",
}
#: Answering machine detection says more than the disconnect reason when it saw these.
AMD_REASONS: dict[str, EndedReason] = {
    "VOICEMAIL_BEEP": "voicemail",
    "VOICEMAIL_NO_BEEP": "voicemail",
    "SIT_TONE_BUSY": "busy",
    "AMD_UNANSWERED": "no_answer",
    "SIT_TONE_INVALID_NUMBER": "failed",
    "SIT_TONE_DETECTED": "failed",
    "FAX_MACHINE_DETECTED": "failed",
}


def _endpoint_number(endpoint: Any) -> str | None:
    if not isinstance(endpoint, dict):
        return None
    kind = text(get_ci(endpoint, "type"))
    if kind not in (None, "TELEPHONE_NUMBER"):
        return None
    return phone(get_ci(endpoint, "address"))


def _channel(detail: dict[str, Any]) -> str | None:
    raw = (text(get_ci(detail, "channel")) or "").upper()
    segments = get_ci(detail, "segmentAttributes")
    if isinstance(segments, dict):
        subtype = get_ci(segments, "connect:Subtype")
        value = get_ci(subtype, "ValueString") if isinstance(subtype, dict) else None
        if raw == "CHAT" and value == "connect:SMS":
            return "sms"
    return CHANNELS.get(raw)


def _direction(method: str, channel_raw: str) -> str:
    if method in OUTBOUND_METHODS:
        return "outbound"
    if method == "API":  # StartOutboundVoiceContact for voice; StartChat/Task/EmailContact are the customer's
        return "outbound" if channel_raw == "VOICE" else "inbound"
    return "inbound"


def _agent_id(detail: dict[str, Any]) -> str:
    agent = get_ci(detail, "agentInfo")
    arn = text(get_ci(agent, "agentArn")) if isinstance(agent, dict) else None
    if arn:
        return arn.rsplit("/", 1)[-1] or arn
    instance = text(get_ci(detail, "instanceArn"))
    return f"connect-instance/{instance.rsplit('/', 1)[-1]}" if instance else "amazon-connect"


def _reason(detail: dict[str, Any], direction: str) -> tuple[EndedReason, str | None]:
    amd = text(get_ci(detail, "answeringMachineDetectionStatus"))
    if amd in AMD_REASONS:
        return AMD_REASONS[amd], amd
    raw = get_ci(detail, "disconnectReason")
    if isinstance(raw, dict):  # the API's DisconnectReason object: {"Code": ...}
        raw = get_ci(raw, "code")
    code = text(raw)
    if code is not None:
        return DISCONNECT_REASONS.get(code.upper(), "other"), code
    if direction == "outbound" and get_ci(detail, "connectedToSystemTimestamp") is None:
        return "no_answer", None
    return "completed", None


def normalise_detail(detail_value: Any, environment: str, event_time: Any = None) -> Normalised | Ignored:
    """A contact event's ``detail`` → a detail, or :class:`Ignored` (other event types, tasks, monitors)."""
    detail = as_object(detail_value, "detail")
    event_type = (text(get_ci(detail, "eventType")) or "").upper()
    if event_type != TAKEN_EVENT:
        return Ignored(PLATFORM, f"eventType is {event_type or 'missing'!r}; aftercall takes {TAKEN_EVENT}")
    contact_raw = get_ci(detail, "contactId")
    contact_id = conversation_id(contact_raw, "detail.contactId")
    channel_raw = (text(get_ci(detail, "channel")) or "").upper()
    channel = _channel(detail)
    if channel is None:
        return Ignored(PLATFORM, f"channel {channel_raw or 'missing'!r} is not a conversation (voice, chat, email)")
    method = (text(get_ci(detail, "initiationMethod")) or "").upper()
    if method in IGNORED_METHODS:
        return Ignored(PLATFORM, f"initiationMethod {method} is a supervisor leg, not a conversation")
    direction = _direction(method, channel_raw)

    disconnected = get_ci(detail, "disconnectTimestamp") or event_time
    if disconnected is None:
        raise missing("detail.disconnectTimestamp")
    ended_at = from_iso(disconnected, "detail.disconnectTimestamp")
    initiated = get_ci(detail, "initiationTimestamp")
    started_at = from_iso(initiated, "detail.initiationTimestamp") if initiated else ended_at
    connected = get_ci(detail, "connectedToSystemTimestamp")
    talk_from = from_iso(connected, "detail.connectedToSystemTimestamp") if connected else started_at
    duration = max(0.0, (ended_at - max(talk_from, started_at)).total_seconds())

    tags = as_object(get_ci(detail, "tags"), "detail.tags")
    customer = _endpoint_number(get_ci(detail, "customerEndpoint"))
    system = _endpoint_number(get_ci(detail, "systemEndpoint")) or phone(tags.get("aws:connect:systemEndpoint"))
    caller, callee = (customer, system) if direction == "inbound" else (system, customer)
    reason, raw_reason = _reason(detail, direction)

    attributes = get_ci(detail, "attributes")
    user_tags = {key: value for key, value in tags.items() if not key.startswith("aws:")}
    state = merge_state(user_tags, attributes if isinstance(attributes, dict) else None)
    agent = get_ci(detail, "agentInfo")
    queue = get_ci(detail, "queueInfo")
    platform_info: dict[str, Any] = {
        "contact_id": text(contact_raw),
        "initial_contact_id": text(get_ci(detail, "initialContactId")),
        "previous_contact_id": text(get_ci(detail, "previousContactId")),
        "related_contact_id": text(get_ci(detail, "relatedContactId")),
        "instance_arn": text(get_ci(detail, "instanceArn")),
        "initiation_method": method or None,
        "channel": text(get_ci(detail, "channel")),
        "ended_reason": raw_reason,
        "agent_arn": text(get_ci(agent, "agentArn")) if isinstance(agent, dict) else None,
        "queue_arn": text(get_ci(queue, "queueArn")) if isinstance(queue, dict) else None,
        "customer_id": text(get_ci(detail, "customerId")),
        "tags": tags,
    }
    return build_detail(
        platform=PLATFORM,
        conversation_id=contact_id,
        environment=environment,
        channel=channel,
        direction=direction,
        started_at=started_at,
        ended_at=ended_at,
        duration_seconds=duration,
        caller=caller,
        callee=callee,
        agent_id=_agent_id(detail),
        ended_reason=reason,
        ended_reason_raw=raw_reason,
        state=state,
        platform_info=platform_info,
    )


def normalise(payload: Any, environment: str) -> Normalised | Ignored:
    """A whole EventBridge contact event, or (from a saved log) just its ``detail``."""
    root = as_object(payload, "event")
    if "detail" in root or "detail-type" in root:
        source, detail_type = root.get("source"), root.get("detail-type")
        if source != SOURCE or detail_type != DETAIL_TYPE:
            return Ignored(PLATFORM, f"not an {DETAIL_TYPE!r} from {SOURCE} (source {source!r})")
        return normalise_detail(root.get("detail"), environment, root.get("time"))
    return normalise_detail(root, environment)
