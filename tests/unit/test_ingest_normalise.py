"""Vendor payloads → the ``Conversation Ended`` contract: the published samples, the mappings, the edge cases.

``tests/fixtures/vendor-payloads/`` holds the vendors' samples byte for byte as published (see its
SOURCES.md). Three are not JSON as published; the tests pin what the adapters do with each and
which minimal repair makes them JSON. ``events/vendor/`` holds the ready-to-use samples derived
from them (docs/ingest.md says how).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aftercall.ingest import common, connect, elevenlabs, retell, vapi
from aftercall.ingest.common import Ignored, Normalised
from aftercall.ingest.errors import PayloadError
from aftercall.ingest.normalise import normalise, parse_json
from aftercall.models.event import CONVERSATION_ID, ConversationEndedDetail

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "tests" / "fixtures" / "vendor-payloads"
SAMPLES = ROOT / "events" / "vendor"


def published(name: str) -> str:
    return (PUBLISHED / name).read_text(encoding="utf-8")


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def mapped(platform: str, payload: Any, environment: str = "sandbox") -> dict[str, Any]:
    result = normalise(platform, payload, environment)
    assert isinstance(result, Normalised), result
    # Whatever an adapter returns is a valid detail of the contract
    ConversationEndedDetail.model_validate(result.detail)
    return result.detail


def refused(platform: str, payload: Any) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        normalise(platform, payload, "sandbox")
    return caught.value


# The minimal repairs that make the invalid-as-published samples JSON (documented in docs/ingest.md).
def without_trailing_commas(text: str) -> str:
    return re.sub(r",(\s*[}\]])", r"\1", text)


def without_block_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/(?=\s*\n)", "", text)


def without_object_placeholders(text: str) -> str:
    return re.sub(r"\[\s*\[Object\](?:\s*,\s*\[Object\])*\s*\]", "[]", text)


# ---------------------------------------------------------------------------------------------- as published


def test_the_elevenlabs_sample_maps_field_by_field() -> None:
    # Given ElevenLabs' post_call_transcription sample, valid JSON as published
    payload = parse_json(published("elevenlabs_post_call_transcription.json"))
    # When it is mapped
    detail = mapped("elevenlabs", payload)
    # Then the conversation, agent, times and reason come from data/metadata
    assert detail["conversation_id"] == "abc"
    assert detail["agent_id"] == "xyz"
    assert detail["started_at"] == "2025-02-14T12:48:17Z"  # start_time_unix_secs 1739537297
    assert detail["ended_at"] == "2025-02-14T12:48:39Z"  # + call_duration_secs 22
    assert detail["duration_seconds"] == 22
    assert (detail["channel"], detail["direction"]) == ("voice", "inbound")
    assert detail["ended_reason"] == "completed"  # termination_reason "" on a "done" call
    assert "ended_reason_raw" not in detail
    # And the dynamic variables and analysis become state; the rest is kept under _platform
    state = detail["state"]
    assert state["user_name"] == "angelo"
    assert state["call_successful"] == "success"
    assert state["summary"].startswith("The conversation begins")
    assert state["_platform"]["name"] == "elevenlabs"
    assert state["_platform"]["user_id"] == "user123"
    assert state["_platform"]["transcript"].splitlines()[0] == "agent: Hey there angelo. How are you?"
    assert "caller" not in detail  # a web call: no phone numbers


def test_the_retell_call_object_maps_as_a_call_analyzed_webhook() -> None:
    # Given Retell's call object (with call_analysis) in the call_analyzed envelope
    payload = {"event": "call_analyzed", "call": parse_json(published("retell_call_object_with_analysis.json"))}
    detail = mapped("retell", payload)
    assert detail["conversation_id"] == "Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6"
    assert detail["agent_id"] == "oBeDLoLOeuAbiuaMFXRtDOLriTJ5tSxD"
    assert detail["started_at"] == "2023-12-23T03:33:27.333000Z"  # start_timestamp 1703302407333 ms
    assert detail["ended_at"] == "2023-12-23T03:33:48.855000Z"
    assert detail["duration_seconds"] == 10  # duration_ms as reported (talk time), not end - start
    assert (detail["ended_reason"], detail["ended_reason_raw"]) == ("agent_hangup", "agent_hangup")
    state = detail["state"]
    assert state["customer_name"] == "John Doe"  # retell_llm_dynamic_variables
    assert state["last_node_name"] == "Test node"  # collected_dynamic_variables
    assert (state["sentiment"], state["call_successful"]) == ("Positive", True)
    assert state["summary"].startswith("The agent called the user")
    assert state["_platform"]["cost"] == 70
    assert state["_platform"]["call_type"] == "web_call"
    # And the ready-to-use sample is exactly that envelope
    assert sample("retell_call_analyzed.json") == payload


def test_retells_call_ended_sample_is_not_json_and_once_repaired_is_ignored() -> None:
    text = published("retell_call_ended_webhook.jsonc")
    # Given the webhook-overview sample with its "[Object]" placeholders: not JSON, refused with a position
    with pytest.raises(PayloadError) as caught:
        parse_json(text)
    assert (caught.value.reason, caught.value.status) == ("invalid_json", 400)
    assert "line 19, column 29" in caught.value.message
    # When the placeholders are replaced by empty lists, it is a call_ended event: acknowledged, not mapped
    result = normalise("retell", parse_json(without_object_placeholders(text)), "sandbox")
    assert isinstance(result, Ignored)
    assert "call_analyzed" in result.reason


def test_the_connect_sample_is_not_json_and_once_repaired_maps() -> None:
    text = published("connect_disconnected.jsonc")
    # Given Amazon Connect's DISCONNECTED sample: one trailing comma makes it invalid
    with pytest.raises(PayloadError) as caught:
        parse_json(text)
    assert "line 37, column 9" in caught.value.message
    # When that comma is removed (the ready-to-use sample is exactly this)
    event = parse_json(without_trailing_commas(text))
    assert event == sample("connect_disconnected.json")
    detail = mapped("connect", event)
    # Then the contact maps: outbound voice, talk time from connectedToSystem to disconnect
    assert detail["conversation_id"] == "11111111-1111-1111-1111-111111111111"
    assert (detail["channel"], detail["direction"]) == ("voice", "outbound")
    assert detail["started_at"] == "2021-08-04T17:17:53Z"
    assert detail["ended_at"] == "2021-08-04T17:18:37Z"
    assert detail["duration_seconds"] == 42
    assert detail["ended_reason"] == "completed"  # no disconnectReason on a connected contact
    assert detail["agent_id"] == "arn"  # AgentInfo.AgentArn (PascalCase in this sample), last segment
    assert detail["state"]["_platform"]["initial_contact_id"] == "11111111-2222-3333-4444-555555555555"


def test_the_vapi_consent_sample_is_not_json_and_once_repaired_lacks_a_call_id() -> None:
    text = published("vapi_end_of_call_report_consent.jsonc")
    # Given Vapi's recording-consent sample with /* comments */ in place of analysis and artifact
    with pytest.raises(PayloadError) as caught:
        parse_json(text)
    assert "line 5, column 7" in caught.value.message
    # When the comments are removed, it is JSON but has no call: there is no id to deduplicate on
    error = refused("vapi", parse_json(without_block_comments(text)))
    assert (error.reason, error.status) == ("missing_field", 422)
    assert "message.call.id" in error.message


def test_the_vapi_sample_keeps_an_unknown_end_reason_raw_and_maps_structured_outputs() -> None:
    # Given the ready-to-use Vapi sample: the repaired consent report, the structured-outputs
    # sample in artifact.structuredOutputs, and a call object
    payload = sample("vapi_end_of_call_report.json")
    outputs = parse_json(published("vapi_structured_outputs_result.json"))
    assert payload["message"]["artifact"]["structuredOutputs"] == outputs
    detail = mapped("vapi", payload)
    # Then "assistantEndedCall" (not in Vapi's enum) is "other", with the raw value kept
    assert (detail["ended_reason"], detail["ended_reason_raw"]) == ("other", "assistantEndedCall")
    assert detail["conversation_id"] == "3f1d2c4b-8a7e-4f60-9b1a-2d5c6e7f8a90"
    assert (detail["caller"], detail["callee"]) == ("+14155550123", "+18005550100")
    assert detail["duration_seconds"] == 600
    # And each structured output is in state under its name; consent is kept for the record
    assert detail["state"]["Support Ticket"] == outputs["550e8400-e29b-41d4-a716-446655440001"]["result"]
    assert detail["state"]["_platform"]["compliance"]["recordingConsent"]["type"] == "verbal"


def test_the_generic_sample_is_a_detail_with_the_environment_filled_in() -> None:
    detail = mapped("generic", sample("generic_conversation_ended.json"), "live")
    assert detail["environment"] == "live"
    assert detail["conversation_id"] == "bridge-2026-11-25-0001"


# ---------------------------------------------------------------------------------------------- end reasons


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("customer-ended-call", "customer_hangup"),
        ("customer-ended-call-during-transfer", "customer_hangup"),
        ("assistant-said-end-call-phrase", "agent_hangup"),
        ("assistant-forwarded-call", "transferred"),
        ("customer-busy", "busy"),
        ("customer-did-not-answer", "no_answer"),
        ("voicemail", "voicemail"),
        ("silence-timed-out", "timeout"),
        ("exceeded-max-duration", "timeout"),
        ("pipeline-error-openai-llm-failed", "failed"),
        ("call.in-progress.error-vapifault-worker-died", "failed"),
        ("twilio-failed-to-connect-call", "failed"),
        ("manually-canceled", "other"),
        ("assistantEndedCall", "other"),
    ],
)
def test_vapi_end_reasons(raw: str, expected: str) -> None:
    payload = sample("vapi_end_of_call_report.json")
    payload["message"]["endedReason"] = raw
    detail = mapped("vapi", payload)
    assert (detail["ended_reason"], detail["ended_reason_raw"]) == (expected, raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("user_hangup", "customer_hangup"),
        ("call_transfer", "transferred"),
        ("voicemail_reached", "voicemail"),
        ("inactivity", "timeout"),
        ("dial_busy", "busy"),
        ("dial_no_answer", "no_answer"),
        ("dial_failed", "failed"),
        ("error_llm_websocket_open", "failed"),
        ("ivr_reached", "other"),
        ("user_declined", "other"),
    ],
)
def test_retell_end_reasons(raw: str, expected: str) -> None:
    payload = sample("retell_call_analyzed.json")
    payload["call"]["disconnection_reason"] = raw
    detail = mapped("retell", payload)
    assert (detail["ended_reason"], detail["ended_reason_raw"]) == (expected, raw)


@pytest.mark.parametrize(
    ("raw", "status", "expected"),
    [
        ("end_call tool was called.", "done", "agent_hangup"),
        ("Call ended by remote party", "done", "customer_hangup"),
        ("Client disconnected: 1000", "done", "customer_hangup"),
        ("Maximum duration exceeded", "done", "timeout"),
        ("Voicemail detected", "done", "voicemail"),
        ("something new", "done", "other"),
        ("", "failed", "failed"),
    ],
)
def test_elevenlabs_free_text_reasons_are_matched_and_kept(raw: str, status: str, expected: str) -> None:
    payload = sample("elevenlabs_post_call_transcription.json")
    payload["data"]["metadata"]["termination_reason"] = raw
    payload["data"]["status"] = status
    detail = mapped("elevenlabs", payload)
    assert detail["ended_reason"] == expected
    assert detail.get("ended_reason_raw") == (raw or None)


@pytest.mark.parametrize(
    ("fields", "expected", "raw"),
    [
        ({"disconnectReason": "CUSTOMER_DISCONNECT"}, "customer_hangup", "CUSTOMER_DISCONNECT"),
        ({"disconnectReason": "AGENT_DISCONNECT"}, "agent_hangup", "AGENT_DISCONNECT"),
        ({"disconnectReason": "TELECOM_PROBLEM"}, "failed", "TELECOM_PROBLEM"),
        ({"disconnectReason": "THIRD_PARTY_DISCONNECT"}, "other", "THIRD_PARTY_DISCONNECT"),
        ({"disconnectReason": {"Code": "OUTBOUND_ATTEMPT_FAILED"}}, "failed", "OUTBOUND_ATTEMPT_FAILED"),
        ({"answeringMachineDetectionStatus": "VOICEMAIL_BEEP"}, "voicemail", "VOICEMAIL_BEEP"),
        ({"answeringMachineDetectionStatus": "SIT_TONE_BUSY"}, "busy", "SIT_TONE_BUSY"),
        ({"connectedToSystemTimestamp": None}, "no_answer", None),
    ],
)
def test_connect_disconnect_reasons(fields: dict[str, Any], expected: str, raw: str | None) -> None:
    event = sample("connect_disconnected.json")
    event["detail"].update(fields)
    event["detail"] = {key: value for key, value in event["detail"].items() if value is not None}
    detail = mapped("connect", event)
    assert (detail["ended_reason"], detail.get("ended_reason_raw")) == (expected, raw)


# ---------------------------------------------------------------------------------------------- what is ignored


@pytest.mark.parametrize(
    ("platform", "payload"),
    [
        ("vapi", {"message": {"type": "status-update", "status": "in-progress"}}),
        ("retell", {"event": "call_started", "call": {"call_id": "x"}}),
        ("elevenlabs", {"type": "post_call_audio", "data": {"conversation_id": "abc", "full_audio": "AAAA"}}),
        ("elevenlabs", {"type": "call_initiation_failure", "data": {"failure_reason": "busy"}}),
    ],
)
def test_other_event_types_are_acknowledged_not_mapped(platform: str, payload: dict[str, Any]) -> None:
    assert isinstance(normalise(platform, payload, "sandbox"), Ignored)


@pytest.mark.parametrize(
    "change",
    [
        {"eventType": "QUEUED"},
        {"channel": "TASK"},
        {"initiationMethod": "MONITOR"},
    ],
)
def test_connect_events_that_are_not_conversation_ends_are_ignored(change: dict[str, str]) -> None:
    event = sample("connect_disconnected.json")
    event["detail"].update(change)
    assert isinstance(normalise("connect", event, "sandbox"), Ignored)


def test_connect_reads_keys_in_either_casing_and_accepts_a_bare_detail() -> None:
    # Given the same contact with PascalCase keys (as in some of Connect's own samples), without envelope
    event = sample("connect_disconnected.json")
    pascal = {key[0].upper() + key[1:]: value for key, value in event["detail"].items()}
    pascal["CustomerEndpoint"] = {"Type": "TELEPHONE_NUMBER", "Address": "+14155550123"}
    pascal["Tags"] = {"aws:connect:systemEndpoint": "+18005550100", "Dept": "Finance"}
    detail = mapped("connect", pascal)
    # Then it maps like the camelCase event, numbers included (outbound: the system calls the customer)
    assert detail["conversation_id"] == "11111111-1111-1111-1111-111111111111"
    assert (detail["caller"], detail["callee"]) == ("+18005550100", "+14155550123")
    assert detail["state"]["Dept"] == "Finance"
    assert "aws:connect:systemEndpoint" not in detail["state"]


def test_a_connect_chat_with_the_sms_subtype_is_an_sms_conversation() -> None:
    event = sample("connect_disconnected.json")
    event["detail"].update(
        channel="CHAT",
        initiationMethod="API",
        segmentAttributes={"connect:Subtype": {"ValueString": "connect:SMS"}},
    )
    detail = mapped("connect", event)
    assert (detail["channel"], detail["direction"]) == ("sms", "inbound")


# ---------------------------------------------------------------------------------------------- normalisation details


def test_the_same_payload_always_maps_to_the_identical_detail() -> None:
    # The handler's idempotency compares whole details: a duplicate webhook must map byte for byte the same
    for platform, name in [
        ("vapi", "vapi_end_of_call_report.json"),
        ("retell", "retell_call_analyzed.json"),
        ("elevenlabs", "elevenlabs_post_call_transcription.json"),
        ("connect", "connect_disconnected.json"),
    ]:
        first = json.dumps(mapped(platform, sample(name)), sort_keys=True)
        assert json.dumps(mapped(platform, sample(name)), sort_keys=True) == first


def test_phone_numbers_are_normalised_and_junk_is_kept_out_of_caller() -> None:
    payload = sample("vapi_end_of_call_report.json")
    payload["message"]["customer"]["number"] = "+1 (415) 555-0123"
    payload["message"]["phoneNumber"]["number"] = "anonymous"
    detail = mapped("vapi", payload)
    assert detail["caller"] == "+14155550123"
    assert "callee" not in detail
    # An unusable customer number is kept (in state, never in logs) rather than silently lost
    payload["message"]["customer"]["number"] = "sip:someone@example.com"
    detail = mapped("vapi", payload)
    assert "caller" not in detail
    assert detail["state"]["_platform"]["unparsed_customer_number"] == "sip:someone@example.com"


def test_outbound_calls_put_the_customer_as_callee() -> None:
    payload = sample("vapi_end_of_call_report.json")
    payload["message"]["call"]["type"] = "outboundPhoneCall"
    detail = mapped("vapi", payload)
    assert (detail["direction"], detail["caller"], detail["callee"]) == ("outbound", "+18005550100", "+14155550123")


def test_times_without_a_zone_are_utc_and_an_end_before_the_start_is_refused() -> None:
    payload = sample("vapi_end_of_call_report.json")
    payload["message"]["startedAt"] = "2024-01-15T10:25:00"
    assert mapped("vapi", payload)["started_at"] == "2024-01-15T10:25:00Z"
    payload["message"]["endedAt"] = "2024-01-15T10:20:00Z"
    assert refused("vapi", payload).reason == "invalid_field"
    payload["message"]["endedAt"] = "yesterday"
    error = refused("vapi", payload)
    assert error.message == "message.endedAt is not an ISO 8601 timestamp"


def test_collected_values_override_input_variables_and_none_is_dropped() -> None:
    payload = sample("retell_call_analyzed.json")
    payload["call"]["retell_llm_dynamic_variables"] = {"intent": "unknown", "customer_name": "Jo"}
    payload["call"]["collected_dynamic_variables"] = {"intent": "billing_dispute", "ignored": None}
    state = mapped("retell", payload)["state"]
    assert state["intent"] == "billing_dispute"
    assert state["customer_name"] == "Jo"
    assert "ignored" not in state


def test_elevenlabs_data_collection_values_and_phone_call_become_state_and_numbers() -> None:
    payload = sample("elevenlabs_post_call_transcription.json")
    payload["data"]["analysis"]["data_collection_results"] = {
        "support_needed": {"data_collection_id": "support_needed", "value": True, "rationale": "asked for help"},
        "ticket_subject": {"data_collection_id": "ticket_subject", "value": "Login broken", "rationale": "..."},
    }
    payload["data"]["metadata"]["phone_call"] = {
        "direction": "outbound",
        "agent_number": "+18005550100",
        "external_number": "+14155550123",
        "type": "twilio",
        "call_sid": "CA123",
    }
    payload["data"]["conversation_initiation_client_data"]["dynamic_variables"]["system__caller_id"] = "+1999"
    detail = mapped("elevenlabs", payload)
    assert detail["state"]["support_needed"] is True
    assert detail["state"]["ticket_subject"] == "Login broken"
    assert (detail["direction"], detail["caller"], detail["callee"]) == ("outbound", "+18005550100", "+14155550123")
    assert not any(key.startswith("system__") for key in detail["state"])


def test_a_long_transcript_is_cut_and_flagged() -> None:
    payload = sample("retell_call_analyzed.json")
    payload["call"]["transcript"] = "Agent: hello\n" * 10_000
    platform = mapped("retell", payload)["state"]["_platform"]
    assert len(platform["transcript"]) == common.MAX_TRANSCRIPT_CHARS
    assert platform["transcript_truncated"] is True


def test_the_transcript_gives_way_when_state_would_exceed_the_contracts_limit() -> None:
    # Given a call whose collected data fills most of the 200 KB state budget, plus a long transcript
    payload = sample("retell_call_analyzed.json")
    payload["call"]["collected_dynamic_variables"] = {"notes": "x" * 180_000}
    payload["call"]["transcript"] = "Agent: hello\n" * 3_000
    state = mapped("retell", payload)["state"]
    # Then the collected data is kept whole and the transcript is dropped, saying so
    assert len(state["notes"]) == 180_000
    assert "transcript" not in state["_platform"]
    assert state["_platform"]["transcript_dropped"] is True
    # And collected data alone over the budget is refused, naming the limit
    payload["call"]["collected_dynamic_variables"] = {"notes": "x" * 210_000}
    error = refused("retell", payload)
    assert error.reason == "invalid_detail"
    assert "state" in error.message


@pytest.mark.parametrize(
    ("platform", "payload", "field"),
    [
        ("retell", {"event": "call_analyzed", "call": {"agent_id": "a", "end_timestamp": 1}}, "call.call_id"),
        ("retell", {"event": "call_analyzed", "call": {"call_id": "c", "end_timestamp": 1}}, "call.agent_id"),
        ("retell", {"event": "call_analyzed"}, "call.call_id"),
        ("elevenlabs", {"type": "post_call_transcription", "data": {"agent_id": "a"}}, "data.conversation_id"),
        ("vapi", {"message": {"type": "end-of-call-report", "call": {"id": "x"}}}, "message.endedAt"),
        ("connect", {"eventType": "DISCONNECTED", "channel": "VOICE"}, "detail.contactId"),
    ],
)
def test_a_payload_missing_what_the_contract_needs_is_refused_naming_the_field(
    platform: str, payload: dict[str, Any], field: str
) -> None:
    error = refused(platform, payload)
    assert (error.reason, error.status) == ("missing_field", 422)
    assert field in error.message


def test_a_connect_event_without_an_event_type_is_not_a_disconnect_and_is_ignored() -> None:
    event = {"detail-type": connect.DETAIL_TYPE, "source": "aws.connect", "detail": {}}
    result = normalise("connect", event, "sandbox")
    assert isinstance(result, Ignored)
    assert "eventType" in result.reason


def test_a_payload_of_the_wrong_shape_is_refused_naming_the_field() -> None:
    assert refused("vapi", {"message": "end-of-call-report"}).message == "message is not a JSON object"
    assert refused("vapi", [1, 2]).message == "body is not a JSON object"
    assert refused(
        "retell", {"event": "call_analyzed", "call": {"call_id": "c", "agent_id": "a", "end_timestamp": "x"}}
    ).reason == ("invalid_field")


def test_generic_details_are_checked_against_the_contract() -> None:
    detail = sample("generic_conversation_ended.json")
    assert refused("generic", {**detail, "environment": "live"}).reason == "wrong_environment"
    error = refused("generic", {**detail, "caller": "not a number", "mood": "great"})
    assert error.reason == "invalid_detail"
    assert "caller" in error.message
    assert "1 unexpected field" in error.message
    assert "mood" not in error.message  # a name the sender made up is counted, not quoted (it may be data)
    assert "not a number" not in error.message  # values are never echoed (they may be personal data)


def test_parse_json_refuses_nan_non_utf8_and_comments() -> None:
    assert parse_json(b'{"a": 1}') == {"a": 1}
    for body in (b'{"a": NaN}', b"\xff\xfe{}", b'{"a": 1 /* no */}'):
        with pytest.raises(PayloadError) as caught:
            parse_json(body)
        assert (caught.value.reason, caught.value.status) == ("invalid_json", 400)


# ---------------------------------------------------------------------------------------------- conversation ids


@pytest.mark.parametrize("raw", ["Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6", "abc", "conv_01J:x.y-z"])
def test_a_valid_vendor_id_is_the_conversation_id_unchanged(raw: str) -> None:
    assert common.conversation_id(raw, "id") == raw


@settings(max_examples=200, deadline=None)
@given(raw=st.text(min_size=1, max_size=300).filter(str.strip))
def test_property_any_vendor_id_becomes_a_valid_deterministic_conversation_id(raw: str) -> None:
    # Whatever a vendor sends as its call id, the result fits the contract's id pattern, is the
    # same every time (duplicates still deduplicate), and differs for ids that differ after cleaning
    cleaned = common.conversation_id(raw, "id")
    assert re.match(CONVERSATION_ID, cleaned)
    assert common.conversation_id(raw, "id") == cleaned
    if cleaned != raw.strip():
        assert common.conversation_id(raw + "#", "id") != cleaned


def test_ids_that_clean_to_the_same_text_stay_distinct() -> None:
    assert common.conversation_id("call/1", "id") != common.conversation_id("call?1", "id")


def test_vendor_modules_name_their_platform() -> None:
    assert [module.PLATFORM for module in (vapi, retell, elevenlabs, connect)] == [
        "vapi",
        "retell",
        "elevenlabs",
        "connect",
    ]
