"""Ingest against hostile input: any body gets an answer with a reason, never a 5xx (issue 11, items 1, 2, 9).

* Fuzzing: each vendor's sample has one to four of its fields (at any depth) replaced with hostile
  values: calendar-edge dates, out-of-range epochs, numbers past a float, wrong JSON types, empty,
  huge and invalid-Unicode strings, deep nesting. Every adapter must answer with a mapped event, an
  "ignored", or a 4xx :class:`PayloadError` naming the problem. Through the service, a signed
  hostile webhook must never get a 5xx.
* Duplicate keys: a signed body whose object repeats a key is refused (400 ``duplicate_key``):
  which of the two values counts must not be open to interpretation.
* Webhooks that must not fail: an ElevenLabs ``post_call_audio`` of several MB (ingest ignores it)
  gets a 2xx up to the function URL's 6 MB request limit; Vapi's credential options beyond the
  default (Authorization without ``Bearer``, base64 signatures) are accepted.
"""

# ruff: noqa: F811
from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aftercall.ingest import signatures
from aftercall.ingest.common import Ignored, Normalised
from aftercall.ingest.errors import PayloadError, SignatureError
from aftercall.ingest.normalise import normalise, parse_json
from aftercall.ingest.service import IngestService, WebhookRequest
from aftercall.models.event import ConversationEndedDetail

# The ingest tests' fixtures, imported for this module only: ops_target (a bus copying what it
# accepts to a "delivered" queue), secret_id (the signing secret in Secrets Manager) and service
# (ingest on both). Not `pytest_plugins`: that registers them for every test of the session, where
# this ops_target replaced the operator tools' own. (F811: the tests take them as parameters.)
from tests.support.ingest import (  # noqa: F401
    SAMPLE_FILES,
    SECRETS,
    encode,
    ops_target,
    sample,
    secret_id,
    service,
    webhook,
)
from tests.support.ops import OpsTarget

PLATFORMS = tuple(SAMPLE_FILES)

#: Dates at and past the calendar's edges, in the shapes vendors send them (ISO text, epoch s and ms).
EDGE_DATES = (
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59.999999Z",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00Z",
    "2026-02-30T10:00:00Z",
    "2026-11-25T25:61:00Z",
    "2026-11-25",
    "+275760-09-13T00:00:00.000Z",
    "1970-01-01T00:00:00Z",
    "T",
    253402300800,
    253402300800000,
    -62135596801,
    10**20,
    -(10**20),
    1e308,
    -1e308,
    2**63,
)
NUMBERS = (0, -1, -0.0, 1e308, -1e308, 5e-324, 10**400, -(10**400), 2**64, 7 * 24 * 3600 + 1, True, False)
STRINGS = ("", " ", "\t\n", "x" * 20_000, "\x00", "\u202e", "null", "+1" + "9" * 40, "a" * 300 + "@x.io", "ünï©ødé")


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


HOSTILE = st.one_of(
    st.sampled_from(EDGE_DATES),
    st.sampled_from(NUMBERS),
    st.sampled_from(STRINGS),
    st.sampled_from([None, [], {}, [None], {"": None}, _nested(40), _nested(400)]),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path to every node of a JSON value (the root excluded)."""
    found: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> None:
    for key in path[:-1]:
        value = value[key]
    value[path[-1]] = new


def _mutated(data: st.DataObject, platform: str) -> Any:
    payload = copy.deepcopy(sample(platform))
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        paths = _paths(payload)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        _replace(payload, path, copy.deepcopy(data.draw(HOSTILE, label="value")))  # never share a drawn value
    return payload


def _check_answer(platform: str, body: bytes) -> None:
    """What ingest does with a body, minus signing and the bus: parse, map, serialise the entry."""
    try:
        result: Normalised | Ignored | PayloadError = normalise(platform, parse_json(body), "sandbox")
    except PayloadError as error:
        result = error
    if isinstance(result, PayloadError):
        assert 400 <= result.status < 500, result
        assert result.reason
        assert result.message
        return
    assert isinstance(result, Normalised | Ignored)
    if isinstance(result, Normalised):
        # The entry ingest would send: valid for the contract, strict JSON, encodable as UTF-8
        ConversationEndedDetail.model_validate(result.detail)
        json.dumps(result.detail, ensure_ascii=False, allow_nan=False).encode("utf-8")


@pytest.mark.parametrize("platform", PLATFORMS)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_fuzzed_vendor_fields_get_a_result_or_a_4xx_never_an_exception(platform: str, data: st.DataObject) -> None:
    # Given the platform's sample with fields anywhere in it replaced by hostile values
    payload = _mutated(data, platform)
    # When ingest parses and maps it, Then the answer is an event, "ignored" or a 4xx with a reason
    _check_answer(platform, json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize(
    ("platform", "path"),
    [
        ("vapi", ("message", "startedAt")),
        ("vapi", ("message", "endedAt")),
        ("connect", ("detail", "initiationTimestamp")),
        ("connect", ("detail", "disconnectTimestamp")),
    ],
)
@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_a_date_at_the_edge_of_the_calendar_is_a_422_naming_the_field(
    platform: str, path: tuple[str, ...], moment: str
) -> None:
    # Given a genuine payload whose timestamp is at the calendar's edge
    payload = sample(platform)
    _replace(payload, path, moment)
    # When it is mapped, Then it is refused as an invalid field, not an overflow
    with pytest.raises(PayloadError) as raised:
        normalise(platform, payload, "sandbox")
    assert (raised.value.status, raised.value.reason) == (422, "invalid_field")
    assert path[-1] in raised.value.message


@pytest.mark.parametrize("body", [b'{"a": "\\ud800"}', b'{"a": "\\udfff x"}', b'{"\\udc00": 1}'])
def test_text_that_is_not_valid_unicode_is_a_400(body: bytes) -> None:
    with pytest.raises(PayloadError) as raised:
        parse_json(body)
    assert (raised.value.status, raised.value.reason) == (400, "invalid_json")


@pytest.mark.parametrize("platform", ["vapi", "retell", "elevenlabs", "generic"])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_signed_hostile_webhook_never_gets_a_5xx(
    platform: str, data: st.DataObject, service: IngestService, ops_target: OpsTarget
) -> None:
    # Given a correctly signed webhook whose fields were replaced by hostile values
    body = json.dumps(_mutated(data, platform), ensure_ascii=False).encode("utf-8", "surrogatepass")
    # When it is posted
    response = service.handle(webhook(platform, body))
    # Then the answer is a 2xx or a 4xx with a reason, never a server error
    assert response.status < 500, response.body
    assert response.status < 300 or response.body["error"]
    ops_target.delivered()  # keep the delivered queue small


# ---------------------------------------------------------------------------------------------- duplicate keys


@pytest.mark.parametrize(
    "body",
    [
        b'{"conversation_id": "A", "conversation_id": "B"}',
        b'{"message": {"type": "end-of-call-report", "call": {"id": "A", "id": "B"}}}',
        b'[{"x": 1, "y": 2, "x": 3}]',
    ],
)
def test_a_repeated_key_anywhere_is_a_400_duplicate_key(body: bytes) -> None:
    with pytest.raises(PayloadError) as raised:
        parse_json(body)
    assert (raised.value.status, raised.value.reason) == (400, "duplicate_key")
    assert "conversation_id" not in raised.value.message  # names may be data: not quoted


@pytest.mark.parametrize("platform", ["vapi", "retell", "elevenlabs", "generic"])
def test_a_signed_webhook_with_a_repeated_key_puts_nothing_on_the_bus(
    platform: str, service: IngestService, ops_target: OpsTarget
) -> None:
    # Given a genuine, correctly signed body in which the call's id appears twice with two values
    text = encode(sample(platform)).decode("utf-8")
    first_key = {"vapi": '"type"', "retell": '"event"', "elevenlabs": '"type"', "generic": '"schema_version"'}[platform]
    doubled = text.replace(first_key, f'{first_key}: "something-else", {first_key}', 1)
    # When it is posted
    response = service.handle(webhook(platform, doubled.encode("utf-8")))
    # Then it is refused with the reason, and nothing reached the bus
    assert (response.status, response.body["error"]) == (400, "duplicate_key")
    assert ops_target.delivered() == []


# ---------------------------------------------------------------------------------------------- must not fail


def _audio_webhook(audio_bytes: int) -> bytes:
    """An ElevenLabs post_call_audio webhook: the call's audio as base64 in ``data.full_audio``."""
    audio = base64.b64encode(bytes(audio_bytes)).decode("ascii")
    payload = {
        "type": "post_call_audio",
        "event_timestamp": int(time.time()),
        "data": {"agent_id": "agent_123", "conversation_id": "conv_audio_1", "full_audio": audio},
    }
    return json.dumps(payload).encode("utf-8")


@pytest.mark.parametrize("audio_bytes", [1_500_000, 4_300_000])
def test_an_ignored_event_type_of_several_mb_gets_a_200(
    audio_bytes: int, service: IngestService, ops_target: OpsTarget
) -> None:
    # Given a signed ElevenLabs post_call_audio webhook of 2 to 6 MB (ElevenLabs does not retry)
    body = _audio_webhook(audio_bytes)
    assert 2_000_000 < len(body) < 6 * 1024 * 1024
    # When it is posted
    response = service.handle(webhook("elevenlabs", body))
    # Then it is acknowledged and ignored, and nothing reached the bus
    assert (response.status, response.body["status"]) == (200, "ignored")
    assert ops_target.delivered() == []


def test_a_body_over_the_function_urls_6_mb_limit_is_a_413(service: IngestService) -> None:
    body = _audio_webhook(4_800_000)
    assert len(body) > 6 * 1024 * 1024
    response = service.handle(webhook("elevenlabs", body))
    assert (response.status, response.body["error"]) == (413, "body_too_large")


def _vapi_hmac(body: bytes, secret: str, stamp: int, encoding: str) -> str:
    digest = hmac.new(secret.encode(), str(stamp).encode() + b"." + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode() if encoding == "base64" else digest.hex()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda body, secret: {"authorization": secret}, id="authorization-without-bearer"),
        pytest.param(lambda body, secret: {"authorization": f"Bearer {secret}"}, id="authorization-bearer"),
        pytest.param(lambda body, secret: {"x-vapi-secret": secret}, id="x-vapi-secret"),
        pytest.param(
            lambda body, secret: {
                "x-signature": _vapi_hmac(body, secret, int(time.time()), "base64"),
                "x-timestamp": str(int(time.time())),
            },
            id="hmac-base64",
        ),
        pytest.param(
            lambda body, secret: {
                "x-signature": "sha256=" + _vapi_hmac(body, secret, int(time.time()), "base64"),
                "x-timestamp": str(int(time.time())),
            },
            id="hmac-base64-with-prefix",
        ),
        pytest.param(
            lambda body, secret: {
                "x-signature": _vapi_hmac(body, secret, int(time.time()), "hex"),
                "x-timestamp": str(int(time.time())),
            },
            id="hmac-hex",
        ),
    ],
)
def test_vapis_credential_options_are_accepted(headers: Any, service: IngestService, ops_target: OpsTarget) -> None:
    # Given a Vapi end-of-call report sent with one of Vapi's documented credential options
    body = encode(sample("vapi"))
    request = WebhookRequest(
        "POST", "/vapi", {**headers(body, SECRETS["vapi"]), "content-type": "application/json"}, body
    )
    # When it is posted, Then it is accepted and on the bus
    response = service.handle(request)
    assert response.status == 200, response.body
    assert len(ops_target.delivered()) == 1


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"authorization": "wrong-secret"}, id="authorization-wrong"),
        pytest.param({"authorization": "Basic " + SECRETS["vapi"]}, id="authorization-other-scheme"),
        pytest.param({"authorization": "Bearer "}, id="authorization-bearer-empty"),
        pytest.param({"x-signature": base64.b64encode(b"\x00" * 32).decode(), "x-timestamp": "0"}, id="stale"),
    ],
)
def test_vapi_credentials_that_do_not_match_are_still_refused(
    headers: dict[str, str], service: IngestService, ops_target: OpsTarget
) -> None:
    body = encode(sample("vapi"))
    response = service.handle(WebhookRequest("POST", "/vapi", headers, body))
    assert response.status == 401
    assert ops_target.delivered() == []


def test_a_wrong_base64_signature_is_a_mismatch() -> None:
    body = b"{}"
    stamp = int(time.time())
    wrong = base64.b64encode(hmac.new(b"other", str(stamp).encode() + b"." + body, hashlib.sha256).digest()).decode()
    with pytest.raises(SignatureError) as raised:
        signatures.verify_vapi(body, {"x-signature": wrong, "x-timestamp": str(stamp)}, [SECRETS["vapi"]], stamp)
    assert raised.value.reason == "signature_mismatch"
