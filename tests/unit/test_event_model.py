"""The ``Conversation Ended`` contract: what passes, what is refused, and how the refusal reads."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aftercall.errors import InvalidEventError
from aftercall.handler import parse_event
from aftercall.models.event import MAX_STATE_BYTES, MAX_STATE_DEPTH, ConversationEndedDetail
from tests.support.events import (
    CUSTOMER_PHONE,
    DROP,
    conversation_ended,
    outbound_call_ended,
    support_call_ended,
)


def _nested(depth: int) -> dict[str, Any]:
    state: dict[str, Any] = {"leaf": True}
    for _ in range(depth):
        state = {"level": state}
    return state


def test_a_realistic_event_parses_into_the_typed_detail() -> None:
    # Given an inbound support call as the platform sends it
    event = support_call_ended()
    # When it is parsed for the sandbox stage
    detail = parse_event(event, "sandbox")
    # Then every field comes through typed, and the customer is the caller
    assert detail.conversation_id == event["detail"]["conversation_id"]
    assert detail.direction == "inbound"
    assert detail.customer_phone == CUSTOMER_PHONE
    assert detail.state["support_needed"] is True
    assert detail.state["collected"]["invoice_number"] == "INV-2026-1102"
    assert detail.started_at.tzinfo is not None


def test_the_customer_of_an_outbound_call_is_the_callee() -> None:
    # Given an outbound call
    # When it is parsed
    detail = parse_event(outbound_call_ended(), "sandbox")
    # Then the customer's number is the number that was called
    assert detail.customer_phone == CUSTOMER_PHONE
    assert detail.caller != CUSTOMER_PHONE


def test_phone_numbers_are_normalised_and_emails_lowercased() -> None:
    # Given a number written with spaces and punctuation, and a mixed-case email
    event = conversation_ended(caller="+1 (415) 555-0123", customer_email="  Jane.Doe@Example.COM ")
    # When parsed
    detail = parse_event(event, "sandbox")
    # Then both are in their canonical form
    assert detail.caller == "+14155550123"
    assert detail.customer_email == "jane.doe@example.com"


def test_control_characters_are_stripped_from_state_strings() -> None:
    # Given state strings with NUL, escape and bell characters (tab and newline are kept)
    event = conversation_ended(state={"note": "a\x00b\x1b[31mc\x07", "text": "line1\nline2\tend"})
    # When parsed
    detail = parse_event(event, "sandbox")
    # Then the control characters are gone
    assert detail.state == {"note": "ab[31mc", "text": "line1\nline2\tend"}


def test_state_strings_come_out_in_nfc_even_when_a_control_character_split_a_letter() -> None:
    # Given an "e", a NUL, then a combining acute accent (NFC cannot compose across the NUL)
    event = conversation_ended(state={"name": "Rene\x00\u0301"})
    # When parsed
    detail = parse_event(event, "sandbox")
    # Then the NUL is gone and the letter is composed, as every other state string is
    assert detail.state["name"] == "Ren\u00e9"
    assert unicodedata.is_normalized("NFC", detail.state["name"])


INVALID_CASES = [
    pytest.param({"caller": "415-555"}, "detail.caller", id="bad-phone"),
    pytest.param({"conversation_id": DROP}, "detail.conversation_id", id="missing-conversation-id"),
    pytest.param({"conversation_id": "has spaces/and slashes"}, "detail.conversation_id", id="bad-conversation-id"),
    pytest.param({"unexpected": "x"}, "detail: 1 unexpected field", id="extra-field"),
    pytest.param({"schema_version": "2.0"}, "detail.schema_version", id="unknown-schema-version"),
    pytest.param({"direction": "sideways"}, "detail.direction", id="bad-direction"),
    pytest.param({"ended_at": "2026-11-25T10:00:00"}, "detail.ended_at", id="naive-timestamp"),
    pytest.param({"duration_seconds": -1}, "detail.duration_seconds", id="negative-duration"),
    pytest.param({"customer_email": "not-an-email"}, "detail.customer_email", id="bad-email"),
    pytest.param({"state": {"blob": "x" * (MAX_STATE_BYTES + 1)}}, "detail.state", id="state-too-big"),
    pytest.param({"state": _nested(MAX_STATE_DEPTH + 1)}, "detail.state", id="state-too-deep"),
    pytest.param({"state": {"ratio": float("nan")}}, "detail.state", id="state-nan"),
    pytest.param(
        {"started_at": "2026-11-25T10:00:00Z", "ended_at": "2026-11-25T09:00:00Z"},
        "ended_at is before started_at",
        id="ended-before-started",
    ),
]


@pytest.mark.parametrize(("overrides", "named"), INVALID_CASES)
def test_an_invalid_detail_is_refused_naming_the_field(overrides: dict[str, Any], named: str) -> None:
    # Given an event with one defect
    event = conversation_ended(**overrides)
    # When it is parsed
    # Then InvalidEventError names the field (or the rule) that is wrong
    with pytest.raises(InvalidEventError) as raised:
        parse_event(event, "sandbox")
    assert named in str(raised.value)


def test_a_wrong_detail_type_is_refused_naming_it() -> None:
    # Given an event of another type on the same bus
    event = conversation_ended(envelope={"detail-type": "Conversation Started"})
    # When it is parsed
    # Then the error names detail-type
    with pytest.raises(InvalidEventError, match="detail-type"):
        parse_event(event, "sandbox")


def test_an_event_for_the_other_stage_is_refused() -> None:
    # Given a sandbox conversation
    event = conversation_ended(environment="sandbox")
    # When the live stack parses it
    # Then it is refused as sent to the wrong stage, naming detail.environment
    with pytest.raises(InvalidEventError, match=r"detail\.environment is 'sandbox' but this is the 'live' stack"):
        parse_event(event, "live")


def test_the_refusal_never_echoes_the_bad_value() -> None:
    # Given a malformed phone number that is still personal data
    raw = "+44 7700 900 12x"
    event = conversation_ended(caller=raw)
    # When it is refused
    with pytest.raises(InvalidEventError) as raised:
        parse_event(event, "sandbox")
    # Then the message explains the rule without repeating the number
    message = str(raised.value)
    assert "E.164" in message
    assert "7700" not in message


def test_the_sample_events_in_the_repo_follow_the_contract() -> None:
    # Given the sample events shipped for `sam local invoke`
    from pathlib import Path

    samples = Path(__file__).resolve().parents[2] / "events"
    valid = [p for p in sorted(samples.glob("*.json")) if not p.name.startswith("invalid")]
    # When each is parsed
    # Then all valid ones pass, and each invalid one is refused
    assert valid, "no sample events found"
    for path in valid:
        parse_event(json.loads(path.read_text()), "sandbox")
    for path in samples.glob("invalid*.json"):
        with pytest.raises(InvalidEventError):
            parse_event(json.loads(path.read_text()), "sandbox")


def _strings(value: Any) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in (key, *_strings(item))]
    return []


def _is_control(ch: str) -> bool:
    return (ord(ch) < 32 and ch not in "\t\n") or 0x7F <= ord(ch) <= 0x9F


json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=40)
json_state = st.dictionaries(
    st.text(max_size=12),
    st.recursive(
        json_scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    ),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(state=json_state)
def test_any_json_state_within_limits_is_accepted_clean_and_stable(state: dict[str, Any]) -> None:
    # Given any JSON state (within size and depth limits)
    event = conversation_ended(state=state)
    # When it is parsed
    detail = parse_event(event, "sandbox")
    # Then no string in it holds a control character other than tab/newline, every string is in
    # Unicode NFC, and parsing the result again changes nothing (sanitising is idempotent)
    strings = _strings(detail.state)
    assert not any(_is_control(ch) for s in strings for ch in s)
    assert all(unicodedata.is_normalized("NFC", s) for s in strings)
    again = ConversationEndedDetail.model_validate(detail.model_dump(mode="json"))
    assert again.state == detail.state
