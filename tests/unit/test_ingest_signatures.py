"""Webhook signature schemes: each vendor's format, replay window, rotation, and the properties.

The reference signers below are written from the vendors' own SDKs and docs, independently of
``aftercall.ingest.signatures``, so a scheme we got wrong fails here instead of agreeing with itself.
The clock is a fixed number passed in: no test depends on how long anything takes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aftercall.ingest import signatures
from aftercall.ingest.errors import SignatureError

NOW = 1_800_000_000.0
SECRET = "whsec-test-0123456789abcdef"
BODY = b'{"event":"call_analyzed","call":{"call_id":"abc","note":"caf\xc3\xa9"}}'


# ---------------------------------------------------------------------------------------------- reference signers


def _hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def retell_reference(body: bytes, secret: str, stamp: int) -> dict[str, str]:
    # retell-sdk webhook_auth: sign(input_str + str(timestamp)) → "v={timestamp},d={hexdigest}" (ms)
    return {"x-retell-signature": f"v={stamp},d={_hex(secret, body + str(stamp).encode())}"}


def elevenlabs_reference(body: bytes, secret: str, stamp: int) -> dict[str, str]:
    # elevenlabs-python construct_event: "v0=" + HMAC-SHA256(secret, f"{timestamp}.{rawBody}")
    return {"elevenlabs-signature": f"t={stamp},v0={_hex(secret, f'{stamp}.'.encode() + body)}"}


def vapi_reference(body: bytes, secret: str, stamp: int) -> dict[str, str]:
    # Vapi HMACAuthenticationPlan defaults: sha256, hex, x-signature / x-timestamp, "{timestamp}.{body}"
    return {"x-signature": _hex(secret, f"{stamp}.".encode() + body), "x-timestamp": str(stamp)}


def generic_reference(body: bytes, secret: str, stamp: int) -> dict[str, str]:
    return {"x-aftercall-signature": f"t={stamp},v1={_hex(secret, f'{stamp}.'.encode() + body)}"}


Verify = Callable[[bytes, Mapping[str, str], list[str], float], object]


@dataclass(frozen=True)
class Scheme:
    name: str
    verify: Verify
    sign: Callable[[bytes, str, int], dict[str, str]]
    reference: Callable[[bytes, str, int], dict[str, str]]
    scale: int  # timestamp units per second
    tolerance: float
    header: str

    def stamp(self, seconds: float) -> int:
        return int(seconds * self.scale)

    def with_stamp(self, headers: Mapping[str, str], stamp: int) -> dict[str, str]:
        """The same signature, but claiming another timestamp."""
        changed = dict(headers)
        if self.name == "vapi":
            changed["x-timestamp"] = str(stamp)
        elif self.name == "retell":
            digest = changed[self.header].split(",d=", 1)[1]
            changed[self.header] = f"v={stamp},d={digest}"
        else:
            parts = changed[self.header].split(",", 1)[1]
            changed[self.header] = f"t={stamp},{parts}"
        return changed


SCHEMES = [
    Scheme(
        "retell",
        signatures.verify_retell,
        signatures.sign_retell,
        retell_reference,
        1000,
        signatures.RETELL_TOLERANCE,
        "x-retell-signature",
    ),
    Scheme(
        "elevenlabs",
        signatures.verify_elevenlabs,
        signatures.sign_elevenlabs,
        elevenlabs_reference,
        1,
        signatures.ELEVENLABS_TOLERANCE,
        "elevenlabs-signature",
    ),
    Scheme(
        "vapi",
        signatures.verify_vapi,
        signatures.sign_vapi,
        vapi_reference,
        1,
        signatures.VAPI_TOLERANCE,
        "x-signature",
    ),
    Scheme(
        "generic",
        signatures.verify_generic,
        signatures.sign_generic,
        generic_reference,
        1,
        signatures.GENERIC_TOLERANCE,
        "x-aftercall-signature",
    ),
]
by_name = pytest.mark.parametrize("scheme", SCHEMES, ids=[scheme.name for scheme in SCHEMES])


def _reason(call: Callable[[], object]) -> str:
    with pytest.raises(SignatureError) as caught:
        call()
    assert caught.value.status == 401
    return caught.value.reason


# ---------------------------------------------------------------------------------------------- each scheme


@by_name
def test_a_request_signed_as_the_vendor_does_verifies(scheme: Scheme) -> None:
    # Given a body signed by the reference signer (the vendor's documented scheme)
    headers = scheme.reference(BODY, SECRET, scheme.stamp(NOW - 30))
    # When it is verified
    scheme.verify(BODY, headers, [SECRET], NOW)
    # Then it passes, and our own signer produces exactly the vendor's headers
    assert scheme.sign(BODY, SECRET, scheme.stamp(NOW - 30)) == headers


@by_name
def test_a_tampered_body_is_a_signature_mismatch(scheme: Scheme) -> None:
    headers = scheme.sign(BODY, SECRET, scheme.stamp(NOW))
    tampered = BODY.replace(b"abc", b"abd")
    assert _reason(lambda: scheme.verify(tampered, headers, [SECRET], NOW)) == "signature_mismatch"


@by_name
def test_the_wrong_secret_is_a_signature_mismatch(scheme: Scheme) -> None:
    headers = scheme.sign(BODY, "someone-else's-secret", scheme.stamp(NOW))
    assert _reason(lambda: scheme.verify(BODY, headers, [SECRET], NOW)) == "signature_mismatch"


@by_name
def test_a_stale_timestamp_is_refused_as_a_replay(scheme: Scheme) -> None:
    # Given a correctly signed request whose timestamp is just past the scheme's window
    headers = scheme.sign(BODY, SECRET, scheme.stamp(NOW - scheme.tolerance - 5))
    # Then it is refused for its age, whatever the signature
    assert _reason(lambda: scheme.verify(BODY, headers, [SECRET], NOW)) == "timestamp_outside_tolerance"


@by_name
def test_a_timestamp_far_in_the_future_is_refused(scheme: Scheme) -> None:
    headers = scheme.sign(BODY, SECRET, scheme.stamp(NOW + signatures.FUTURE_SKEW + 60))
    assert _reason(lambda: scheme.verify(BODY, headers, [SECRET], NOW)) == "timestamp_outside_tolerance"


@by_name
def test_a_missing_header_is_named(scheme: Scheme) -> None:
    with pytest.raises(SignatureError) as caught:
        scheme.verify(BODY, {"content-type": "application/json"}, [SECRET], NOW)
    assert caught.value.reason == "missing_signature"
    assert scheme.header in caught.value.message


@by_name
@pytest.mark.parametrize("garbage", ["nonsense", "t=abc,v0=zz", "v=,d=", "x" * 5000, "t=1,v1=nothex"])
def test_a_malformed_header_is_refused_before_any_hmac(scheme: Scheme, garbage: str) -> None:
    headers = {scheme.header: garbage, "x-timestamp": str(int(NOW))}
    assert _reason(lambda: scheme.verify(BODY, headers, [SECRET], NOW)) in {
        "malformed_signature",
        "timestamp_outside_tolerance",
    }


@by_name
def test_during_a_rotation_the_previous_secret_still_verifies(scheme: Scheme) -> None:
    # Given a vendor still signing with the old secret while the new one is configured first
    headers = scheme.sign(BODY, "old-secret", scheme.stamp(NOW))
    # Then the request verifies against [new, old] but not against [new] alone
    scheme.verify(BODY, headers, ["new-secret", "old-secret"], NOW)
    assert _reason(lambda: scheme.verify(BODY, headers, ["new-secret"], NOW)) == "signature_mismatch"


def test_retell_signs_the_body_then_the_millisecond_timestamp_with_no_separator() -> None:
    # A known vector, computed from the formula in retell-sdk's webhook_auth.py
    body, key, stamp = b'{"event":"call_analyzed"}', "key_abc", 1714608491736
    expected = hmac.new(b"key_abc", b'{"event":"call_analyzed"}1714608491736', hashlib.sha256).hexdigest()
    assert signatures.sign_retell(body, key, stamp) == {"x-retell-signature": f"v={stamp},d={expected}"}
    signatures.verify_retell(body, {"x-retell-signature": f"v={stamp},d={expected}"}, [key], stamp / 1000)


def test_an_uppercase_hex_digest_is_accepted() -> None:
    headers = signatures.sign_elevenlabs(BODY, SECRET, int(NOW))
    stamp, digest = headers["elevenlabs-signature"].split(",v0=")
    signatures.verify_elevenlabs(BODY, {"elevenlabs-signature": f"{stamp},v0={digest.upper()}"}, [SECRET], NOW)


# ---------------------------------------------------------------------------------------------- Vapi's other modes


def test_vapi_hmac_accepts_a_github_style_prefix_and_millisecond_timestamps() -> None:
    stamp = int(NOW * 1000)
    digest = _hex(SECRET, f"{stamp}.".encode() + BODY)
    assert (
        signatures.verify_vapi(BODY, {"x-signature": f"sha256={digest}", "x-timestamp": str(stamp)}, [SECRET], NOW)
        == "hmac"
    )


def test_vapi_hmac_without_its_timestamp_header_is_refused() -> None:
    headers = signatures.sign_vapi(BODY, SECRET, int(NOW))
    del headers["x-timestamp"]
    with pytest.raises(SignatureError) as caught:
        signatures.verify_vapi(BODY, headers, [SECRET], NOW)
    assert caught.value.reason == "missing_signature"
    assert "x-timestamp" in caught.value.message


@pytest.mark.parametrize(
    "headers", [{"x-vapi-secret": SECRET}, {"authorization": f"Bearer {SECRET}"}], ids=["x-vapi-secret", "bearer"]
)
def test_vapi_bearer_credentials_compare_the_shared_secret(headers: dict[str, str]) -> None:
    # Given Vapi's Bearer-token credential (legacy X-Vapi-Secret or Authorization: Bearer)
    assert signatures.verify_vapi(BODY, headers, [SECRET], NOW) == "secret"
    # Then a different token is refused
    wrong = {name: value.replace(SECRET, "guess") for name, value in headers.items()}
    assert _reason(lambda: signatures.verify_vapi(BODY, wrong, [SECRET], NOW)) == "signature_mismatch"


def test_vapi_without_any_credential_header_is_missing_signature() -> None:
    assert _reason(lambda: signatures.verify_vapi(BODY, {"authorization": "Basic abc"}, [SECRET], NOW)) == (
        "missing_signature"
    )


# ---------------------------------------------------------------------------------------------- properties

bodies = st.binary(min_size=0, max_size=400)
secrets_ = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=8, max_size=40)


@st.composite
def mutated(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` with one edit: a byte flipped, inserted, removed, or the body truncated/extended."""
    kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "append"]))
    if kind == "flip" and body:
        index = draw(st.integers(0, len(body) - 1))
        bit = 1 << draw(st.integers(0, 7))
        return body[:index] + bytes([body[index] ^ bit]) + body[index + 1 :]
    if kind == "delete" and body:
        index = draw(st.integers(0, len(body) - 1))
        return body[:index] + body[index + 1 :]
    if kind == "truncate" and body:
        return body[: draw(st.integers(0, len(body) - 1))]
    if kind == "insert":
        index = draw(st.integers(0, len(body)))
        return body[:index] + draw(st.binary(min_size=1, max_size=4)) + body[index:]
    return body + draw(st.binary(min_size=1, max_size=4))


@by_name
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), body=bodies, secret=secrets_, age=st.floats(min_value=0, max_value=120))
def test_property_any_change_to_a_signed_body_is_rejected(
    scheme: Scheme, data: st.DataObject, body: bytes, secret: str, age: float
) -> None:
    # Given any body, signed with any secret at a fresh timestamp
    headers = scheme.sign(body, secret, scheme.stamp(NOW - age))
    scheme.verify(body, headers, [secret], NOW)
    # When any single edit is made to the body
    changed = data.draw(mutated(body))
    # Then the request is refused as a signature mismatch
    assert changed != body
    assert _reason(lambda: scheme.verify(changed, headers, [secret], NOW)) == "signature_mismatch"


@by_name
@settings(max_examples=150, deadline=None)
@given(body=bodies, secret=secrets_, original=st.integers(0, 120), other=st.integers(-(10**6), 10**6))
def test_property_any_change_to_the_timestamp_is_rejected(
    scheme: Scheme, body: bytes, secret: str, original: int, other: int
) -> None:
    # Given a request signed at some fresh time
    signed_at = scheme.stamp(NOW - original)
    headers = scheme.sign(body, secret, signed_at)
    # When the timestamp it claims is changed (the signature kept)
    claimed = signed_at + other
    if claimed == signed_at or claimed < 0:
        claimed = signed_at + 1
    forged = scheme.with_stamp(headers, claimed)
    # Then it is refused: for its age when outside the window, else as a signature mismatch
    reason = _reason(lambda: scheme.verify(body, forged, [secret], NOW))
    within = -signatures.FUTURE_SKEW <= NOW - claimed / scheme.scale <= scheme.tolerance
    assert reason == ("signature_mismatch" if within else "timestamp_outside_tolerance")


@settings(max_examples=100, deadline=None)
@given(body=bodies, secret=secrets_, guess=st.text(min_size=64, max_size=64, alphabet="0123456789abcdef"))
def test_property_a_guessed_signature_never_verifies(body: bytes, secret: str, guess: str) -> None:
    real = signatures.sign_generic(body, secret, int(NOW))["x-aftercall-signature"]
    if real.endswith(guess):
        return
    forged = {"x-aftercall-signature": f"t={int(NOW)},v1={guess}"}
    assert _reason(lambda: signatures.verify_generic(body, forged, [secret], NOW)) == "signature_mismatch"
