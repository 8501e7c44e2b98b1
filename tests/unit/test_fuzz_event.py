"""Fuzzing the ``Conversation Ended`` contract: whatever arrives is parsed or refused, specifically.

The invariant for every input, however broken: :func:`parse_event` returns a clean detail or
raises :class:`InvalidEventError` naming what is wrong, without echoing personal data. Never
another exception, and never a detail carrying something that cannot be written on (a lone
surrogate, a control character in ``state``, NaN).
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aftercall.errors import InvalidEventError
from aftercall.handler import parse_event
from aftercall.models.event import MAX_STATE_BYTES, MAX_STATE_DEPTH, ConversationEndedDetail
from tests.support.events import DROP, conversation_ended
from tests.support.fuzz import broken_events, json_values, nested, strings_in, tricky_text, valid_state

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: How every refusal starts: the contract's name, then each bad field and why (or the stage).
REFUSAL = re.compile(r"^(not a valid Conversation Ended event: \S.*|detail\.environment is '\w+' but this is)")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _parse(event: Any) -> ConversationEndedDetail | InvalidEventError:
    """The parsed detail, or the InvalidEventError it was refused with (anything else propagates)."""
    try:
        return parse_event(event, "sandbox")
    except InvalidEventError as refused:
        return refused


def _assert_writable(detail: ConversationEndedDetail) -> None:
    """What passed can be written anywhere: strict JSON, UTF-8, ``state`` clean and within limits."""
    text = json.dumps(detail.model_dump(mode="json"), ensure_ascii=False, allow_nan=False)
    text.encode("utf-8")  # raises on a lone surrogate anywhere in the detail
    strings = strings_in(detail.state)
    assert not any(_CONTROL.search(s) for s in strings)
    assert all(unicodedata.is_normalized("NFC", s) for s in strings)
    assert len(json.dumps(detail.state, ensure_ascii=False).encode()) <= MAX_STATE_BYTES
    assert _depth(detail.state) <= MAX_STATE_DEPTH + 1


@settings(max_examples=150, deadline=None)
@given(event=broken_events())
def test_any_broken_event_is_parsed_clean_or_refused_as_invalid(event: Any) -> None:
    # Given an event broken in one to three ways (or not an object at all)
    # When it is parsed (any exception but InvalidEventError fails this test)
    outcome = _parse(event)
    # Then either it is refused with InvalidEventError naming what is wrong ...
    if isinstance(outcome, InvalidEventError):
        assert REFUSAL.match(str(outcome)), str(outcome)
    # ... or what passed is a clean detail
    else:
        _assert_writable(outcome)


@settings(max_examples=120, deadline=None)
@given(
    state=json_values(max_leaves=20)
    | st.dictionaries(tricky_text, json_values(), max_size=8)
    | st.integers(1, 300).map(nested)
)
def test_any_json_in_state_is_accepted_clean_or_refused_naming_state(state: Any) -> None:
    # Given any JSON value (or NaN, infinity, lone surrogates, deep nesting) as state
    event = conversation_ended(state=state)
    # When it is parsed
    outcome = _parse(event)
    # Then a refusal names detail.state only, and not the keys inside it (they are the user's data)
    if isinstance(outcome, InvalidEventError):
        problems = str(outcome).removeprefix("not a valid Conversation Ended event: ").split("; ")
        assert all(re.match(r"detail\.state: \S", problem) for problem in problems), str(outcome)
    # Or it passes clean
    else:
        _assert_writable(outcome)


@settings(max_examples=100, deadline=None)
@given(state=valid_state)
def test_valid_state_passes_unchanged_but_for_control_characters_and_normalisation(state: dict[str, Any]) -> None:
    # Given valid state full of injection-looking text and odd Unicode (no lone surrogates)
    event = conversation_ended(state=state)
    # When it is parsed
    detail = parse_event(event, "sandbox")

    # Then every string is the original, minus control characters, in NFC: injection-looking
    # text is data here, escaped where it is written out (see test_fuzz_handler.py)
    def expected(value: Any) -> Any:
        if isinstance(value, str):
            return unicodedata.normalize("NFC", _CONTROL.sub("", value))
        if isinstance(value, list):
            return [expected(v) for v in value]
        if isinstance(value, dict):
            return {expected(k): expected(v) for k, v in value.items()}
        return value

    assert detail.state == expected(state)
    _assert_writable(detail)


@settings(max_examples=100, deadline=None)
@given(
    field_and_value=st.tuples(
        st.just("duration_seconds"),
        st.sampled_from(["312", "312.5", " 12 ", "1e3", "NaN", "Infinity"])
        | st.integers(0, 10**6).map(str)
        | st.booleans(),
    )
    | st.tuples(
        st.sampled_from(["started_at", "ended_at"]),
        st.integers(0, 2**40) | st.integers(0, 2**40).map(str) | st.floats(0, 2**40) | st.booleans(),
    )
)
def test_numbers_as_strings_and_timestamps_as_numbers_are_refused_naming_the_field(
    field_and_value: tuple[str, Any],
) -> None:
    # Given a duration sent as text (or a boolean), or a time sent as Unix seconds
    field, value = field_and_value
    event = conversation_ended(**{field: value})
    # When it is parsed
    outcome = _parse(event)
    # Then it is refused naming that field, not coerced into some other number or 1970
    assert isinstance(outcome, InvalidEventError), f"{field}={value!r} was accepted"
    assert f"detail.{field}" in str(outcome)


@st.composite
def _events_with_personal_data(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """An invalid event carrying a phone number and an email in valid and invalid places."""
    digits = draw(st.from_regex(r"[2-9]\d{9}", fullmatch=True))
    phone = f"+1{digits}"
    email = draw(st.from_regex(r"[a-z]{4,10}\.[a-z]{4,10}", fullmatch=True)) + "@example.org"
    placements: list[dict[str, Any]] = [
        {"caller": phone, "customer_email": email, "conversation_id": DROP},
        {"caller": f"{phone} ext 12"},
        {"callee": f"tel:{phone}"},
        {"customer_email": f"{email} <{email}>"},
        {"customer_email": email.replace("@", " at ")},
        {"agent_id": [phone, email]},
        {"ended_reason_raw": {"phone": phone}},
        {"contact": {"phone": phone, "email": email}},
        {"caller": phone, "state": {"phone": phone, "email": email, "ratio": float("nan")}},
        {"caller": phone, "environment": "production"},
        {"customer_email": email, "duration_seconds": phone},
        {"caller": int(digits)},
    ]
    placement = draw(st.sampled_from(placements))
    event = conversation_ended(**placement)
    return event, [digits, email, email.split("@")[0]]


@settings(max_examples=100, deadline=None)
@given(case=_events_with_personal_data())
def test_a_refusal_never_echoes_a_phone_number_or_an_email(case: tuple[dict[str, Any], list[str]]) -> None:
    # Given an invalid event that carries a phone number and an email, well-formed or not
    event, personal = case
    # When it is parsed
    outcome = _parse(event)
    # Then it is refused, and the message names the fields but holds neither the number nor the address
    assert isinstance(outcome, InvalidEventError), "the event was accepted"
    message = str(outcome)
    assert REFUSAL.match(message), message
    assert [value for value in personal if value in message] == []
