"""Webhook signature schemes, verified over the raw body exactly as received.

Each ``verify_*`` function checks one vendor's scheme and raises :class:`SignatureError` with a
specific reason (``missing_signature``, ``malformed_signature``, ``timestamp_outside_tolerance``,
``signature_mismatch``); it returns normally only for a request signed with one of ``secrets``
(several secrets allow a rotation without downtime). Comparisons use :func:`hmac.compare_digest`,
so the time taken does not reveal how much of a forged signature was right. The ``sign_*``
functions produce the headers a vendor would send, for tests, the demo and the generic scheme's
senders.

Schemes, as the vendors' own SDKs and docs define them:

* Retell: ``X-Retell-Signature: v=<unix ms>,d=<hex>``, HMAC-SHA256 keyed with the Retell API key
  (the one with the webhook badge) over ``body + str(ms)``; 5 minutes either way (retell-sdk).
* ElevenLabs: ``ElevenLabs-Signature: t=<unix s>,v0=<hex>``, HMAC-SHA256 over ``"<t>.<body>"``;
  the SDK accepts 30 minutes of age, so do we (and 5 minutes of clock skew into the future).
* Vapi, HMAC credential with Vapi's defaults: ``x-signature: <hex>`` (an optional ``sha256=``
  prefix is accepted, and the ``base64`` signature encoding) and ``x-timestamp``, HMAC-SHA256 over
  ``"<timestamp>.<body>"``; 5 minutes. Or a Bearer-token credential: ``X-Vapi-Secret: <secret>`` /
  ``Authorization: Bearer <secret>`` (or the bare secret, with the Bearer prefix turned off),
  which proves the sender knows the secret but does not bind the body or a time (see docs/ingest.md).
* Generic: ``X-Aftercall-Signature: t=<unix s>,v1=<hex>``, HMAC-SHA256 over ``"<t>.<body>"``; 5 minutes.
  Or Standard Webhooks (standardwebhooks.com, what Svix and its libraries send): ``webhook-id``,
  ``webhook-timestamp`` (unix s) and ``webhook-signature: v1,<base64> [v1,<base64> ...]``,
  HMAC-SHA256 over ``"<id>.<timestamp>.<body>"`` keyed with the secret's bytes (``whsec_<base64>``,
  decoded as the reference library decodes it); 5 minutes either way, any one signature may match.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence

from aftercall.ingest.errors import SignatureError

RETELL_HEADER = "x-retell-signature"
ELEVENLABS_HEADER = "elevenlabs-signature"
VAPI_SIGNATURE_HEADER = "x-signature"
VAPI_TIMESTAMP_HEADER = "x-timestamp"
VAPI_SECRET_HEADER = "x-vapi-secret"  # noqa: S105 - a header name, not a secret
AUTHORIZATION_HEADER = "authorization"
GENERIC_HEADER = "x-aftercall-signature"
STANDARD_ID_HEADER = "webhook-id"
STANDARD_TIMESTAMP_HEADER = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER = "webhook-signature"
STANDARD_SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's prefix, not a secret

RETELL_TOLERANCE = 5 * 60
ELEVENLABS_TOLERANCE = 30 * 60
VAPI_TOLERANCE = 5 * 60
GENERIC_TOLERANCE = 5 * 60
#: How far a sender's clock may run ahead of ours (ElevenLabs' SDK only bounds the past).
FUTURE_SKEW = 5 * 60
#: Longer headers are refused unparsed: no legitimate signature header comes close.
MAX_HEADER_CHARS = 2048
#: Timestamps above this are milliseconds (10^11 s is the year 5138).
_MILLIS_THRESHOLD = 10**11

_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
#: A SHA-256 digest (32 bytes) in base64, with its padding.
_BASE64_SHA256_CHARS = 44
_DIGITS = re.compile(r"^[0-9]{1,16}$")


def _hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _any_match(expected: Iterable[str], provided: Sequence[str]) -> bool:
    """True when a provided hex digest equals an expected one; every pair is compared in constant time."""
    matched = False
    wanted = [candidate.lower().encode("ascii") for candidate in provided]
    for digest in expected:
        for candidate in wanted:
            matched |= hmac.compare_digest(digest.encode("ascii"), candidate)
    return matched


def _header(headers: Mapping[str, str], name: str, scheme: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise SignatureError("missing_signature", f"the {name} header is missing; {scheme} signs every webhook")
    if len(value) > MAX_HEADER_CHARS:
        raise SignatureError("malformed_signature", f"the {name} header is longer than {MAX_HEADER_CHARS} characters")
    return value.strip()


def _pairs(value: str, name: str) -> list[tuple[str, str]]:
    """``k=v,k=v`` split into pairs, or :class:`SignatureError` naming the header."""
    pairs: list[tuple[str, str]] = []
    for part in value.split(","):
        key, sep, item = part.strip().partition("=")
        if not sep or not key or not item:
            raise SignatureError("malformed_signature", f"the {name} header is not a list of key=value parts")
        pairs.append((key.strip(), item.strip()))
    return pairs


def _timestamp_seconds(raw: str, name: str) -> float:
    if not _DIGITS.match(raw):
        raise SignatureError("malformed_signature", f"the timestamp in {name} is not a whole number")
    value = int(raw)
    return value / 1000 if value >= _MILLIS_THRESHOLD else float(value)


def check_freshness(timestamp: float, now: float, tolerance: float, name: str) -> None:
    """Refuse a timestamp older than ``tolerance`` or further than :data:`FUTURE_SKEW` ahead (replays)."""
    age = now - timestamp
    if age > tolerance:
        raise SignatureError(
            "timestamp_outside_tolerance",
            f"the {name} timestamp is {int(age)} s old; at most {int(tolerance)} s is accepted (replay protection)",
        )
    if -age > FUTURE_SKEW:
        raise SignatureError(
            "timestamp_outside_tolerance",
            f"the {name} timestamp is {int(-age)} s in the future; at most {FUTURE_SKEW} s of clock skew is accepted",
        )


def _hex_digests(values: Iterable[str], name: str) -> list[str]:
    digests = [value for value in values if _HEX.match(value)]
    if not digests:
        raise SignatureError("malformed_signature", f"the {name} header holds no 64-digit hex HMAC-SHA256")
    return digests


def _require_secrets(secrets: Sequence[str]) -> None:
    if not secrets:
        raise ValueError("no signing secret to verify with")


# ---------------------------------------------------------------------------------------------- Retell


def verify_retell(
    body: bytes, headers: Mapping[str, str], secrets: Sequence[str], now: float, tolerance: float = RETELL_TOLERANCE
) -> None:
    """Retell: ``v=<ms>,d=<hex>`` = HMAC-SHA256(api key, body + str(ms))."""
    _require_secrets(secrets)
    value = _header(headers, RETELL_HEADER, "Retell")
    match = re.fullmatch(r"v=([0-9]{1,16}),d=(.+)", value)
    if not match:
        raise SignatureError("malformed_signature", f"the {RETELL_HEADER} header is not v=<unix ms>,d=<hex>")
    stamp, digest = match.group(1), match.group(2)
    check_freshness(int(stamp) / 1000, now, tolerance, RETELL_HEADER)
    provided = _hex_digests([digest], RETELL_HEADER)
    message = body + stamp.encode("ascii")
    if not _any_match((_hmac_hex(secret, message) for secret in secrets), provided):
        raise SignatureError("signature_mismatch", "the Retell signature does not match the body and timestamp")


def sign_retell(body: bytes, secret: str, millis: int) -> dict[str, str]:
    """The header Retell sends for ``body`` at ``millis``."""
    return {RETELL_HEADER: f"v={millis},d={_hmac_hex(secret, body + str(millis).encode('ascii'))}"}


# ---------------------------------------------------------------------------------------------- "t=,vN=" schemes


def _verify_t_v(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    now: float,
    tolerance: float,
    *,
    name: str,
    version: str,
    scheme: str,
) -> None:
    value = _header(headers, name, scheme)
    pairs = _pairs(value, name)
    stamps = [item for key, item in pairs if key == "t"]
    if len(stamps) != 1:
        raise SignatureError("malformed_signature", f"the {name} header must carry exactly one t=<unix seconds>")
    seconds = _timestamp_seconds(stamps[0], name)
    check_freshness(seconds, now, tolerance, name)
    provided = _hex_digests((item for key, item in pairs if key == version), name)
    message = stamps[0].encode("ascii") + b"." + body
    if not _any_match((_hmac_hex(secret, message) for secret in secrets), provided):
        raise SignatureError("signature_mismatch", f"the {scheme} signature does not match the body and timestamp")


def verify_elevenlabs(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    now: float,
    tolerance: float = ELEVENLABS_TOLERANCE,
) -> None:
    """ElevenLabs: ``t=<s>,v0=<hex>`` = HMAC-SHA256(webhook secret, "<t>.<body>")."""
    _require_secrets(secrets)
    _verify_t_v(body, headers, secrets, now, tolerance, name=ELEVENLABS_HEADER, version="v0", scheme="ElevenLabs")


def sign_elevenlabs(body: bytes, secret: str, seconds: int) -> dict[str, str]:
    """The header ElevenLabs sends for ``body`` at ``seconds``."""
    digest = _hmac_hex(secret, str(seconds).encode("ascii") + b"." + body)
    return {ELEVENLABS_HEADER: f"t={seconds},v0={digest}"}


def verify_generic(
    body: bytes, headers: Mapping[str, str], secrets: Sequence[str], now: float, tolerance: float = GENERIC_TOLERANCE
) -> None:
    """Generic: ``X-Aftercall-Signature: t=<s>,v1=<hex>`` = HMAC-SHA256(secret, "<t>.<body>"), or Standard
    Webhooks when the request carries ``webhook-signature``."""
    _require_secrets(secrets)
    if headers.get(STANDARD_SIGNATURE_HEADER) is not None and headers.get(GENERIC_HEADER) is None:
        verify_standard_webhooks(body, headers, secrets, now, tolerance)
        return
    _verify_t_v(body, headers, secrets, now, tolerance, name=GENERIC_HEADER, version="v1", scheme="generic webhook")


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: ``whsec_`` dropped, the rest base64-decoded, leniently,
    exactly as the reference libraries decode it (so any secret a sender's library accepts works here)."""
    encoded = secret[len(STANDARD_SECRET_PREFIX) :] if secret.startswith(STANDARD_SECRET_PREFIX) else secret
    try:
        return base64.b64decode(encoded + "==")
    except (binascii.Error, ValueError):
        return b""


def verify_standard_webhooks(
    body: bytes, headers: Mapping[str, str], secrets: Sequence[str], now: float, tolerance: float = GENERIC_TOLERANCE
) -> None:
    """Standard Webhooks: ``webhook-signature: v1,<b64> ...`` = HMAC-SHA256(key, "<id>.<timestamp>.<body>")."""
    _require_secrets(secrets)
    scheme = "Standard Webhooks"
    message_id = _header(headers, STANDARD_ID_HEADER, scheme)
    stamp = _header(headers, STANDARD_TIMESTAMP_HEADER, scheme)
    value = _header(headers, STANDARD_SIGNATURE_HEADER, scheme)
    if not _DIGITS.match(stamp):
        raise SignatureError("malformed_signature", f"the {STANDARD_TIMESTAMP_HEADER} header is not whole unix seconds")
    check_freshness(float(stamp), now, tolerance, STANDARD_TIMESTAMP_HEADER)
    provided: list[bytes] = []
    for entry in value.split():
        version, sep, signature = entry.partition(",")
        if not sep:
            raise SignatureError(
                "malformed_signature", f"the {STANDARD_SIGNATURE_HEADER} header is not space-separated v1,<base64>"
            )
        if version != "v1":
            continue  # other schemes (v1a, asymmetric) may sit beside it: the spec says to skip them
        try:
            provided.append(base64.b64decode(signature, validate=True))
        except (binascii.Error, ValueError):
            raise SignatureError(
                "malformed_signature", f"a v1 signature in {STANDARD_SIGNATURE_HEADER} is not base64"
            ) from None
    if not provided:
        raise SignatureError("malformed_signature", f"the {STANDARD_SIGNATURE_HEADER} header holds no v1 signature")
    signed = message_id.encode("utf-8") + b"." + stamp.encode("ascii") + b"." + body
    matched = False
    for secret in secrets:
        key = standard_webhooks_key(secret)
        if not key:
            continue
        expected = hmac.new(key, signed, hashlib.sha256).digest()
        for candidate in provided:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("signature_mismatch", "no Standard Webhooks signature matches the id, timestamp and body")


def sign_generic(body: bytes, secret: str, seconds: int) -> dict[str, str]:
    """The header a generic sender puts on ``body`` at ``seconds`` (see docs/ingest.md for other languages)."""
    digest = _hmac_hex(secret, str(seconds).encode("ascii") + b"." + body)
    return {GENERIC_HEADER: f"t={seconds},v1={digest}"}


# ---------------------------------------------------------------------------------------------- Vapi


def verify_vapi(
    body: bytes, headers: Mapping[str, str], secrets: Sequence[str], now: float, tolerance: float = VAPI_TOLERANCE
) -> str:
    """Vapi: an HMAC credential (preferred) or a Bearer-token credential; returns which was used."""
    _require_secrets(secrets)
    if headers.get(VAPI_SIGNATURE_HEADER) is not None:
        signature = _header(headers, VAPI_SIGNATURE_HEADER, "Vapi")
        stamp = headers.get(VAPI_TIMESTAMP_HEADER, "").strip()
        if not stamp:
            raise SignatureError(
                "missing_signature",
                f"the {VAPI_TIMESTAMP_HEADER} header is missing; keep the Vapi HMAC credential's timestamp header "
                "and its default payload format {timestamp}.{body}",
            )
        check_freshness(_timestamp_seconds(stamp, VAPI_TIMESTAMP_HEADER), now, tolerance, VAPI_TIMESTAMP_HEADER)
        candidate = signature.split("=", 1)[1] if signature.lower().startswith("sha256=") else signature
        provided = _hex_digests([_vapi_hex(candidate)], VAPI_SIGNATURE_HEADER)
        message = stamp.encode("ascii") + b"." + body
        if not _any_match((_hmac_hex(secret, message) for secret in secrets), provided):
            raise SignatureError("signature_mismatch", "the Vapi HMAC signature does not match the body and timestamp")
        return "hmac"
    token = headers.get(VAPI_SECRET_HEADER)
    if token is None:
        # A Bearer Token credential sends "Authorization: Bearer <token>", or the bare token when
        # its "Include Bearer Prefix" option is off (Vapi docs, Server authentication).
        authorization = headers.get(AUTHORIZATION_HEADER, "").strip()
        scheme, space, credential = authorization.partition(" ")
        bare = None if space else authorization or None  # "Basic …" and other schemes are not Vapi's
        token = credential.strip() or None if scheme.lower() == "bearer" else bare
    if token is None or not token.strip():
        raise SignatureError(
            "missing_signature",
            f"no {VAPI_SIGNATURE_HEADER}/{VAPI_TIMESTAMP_HEADER} (HMAC credential), {VAPI_SECRET_HEADER} or "
            "Authorization: Bearer header; attach a Vapi custom credential to the server URL",
        )
    if len(token) > MAX_HEADER_CHARS:
        raise SignatureError("malformed_signature", "the Vapi secret header is too long")
    given = token.strip().encode("utf-8")
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(secret.encode("utf-8"), given)
    if not matched:
        raise SignatureError("signature_mismatch", "the Vapi secret does not match the configured one")
    return "secret"


def _vapi_hex(candidate: str) -> str:
    """A Vapi HMAC signature as hex: its ``signatureEncoding`` is ``hex`` (the default) or ``base64``."""
    if _HEX.match(candidate) or len(candidate) != _BASE64_SHA256_CHARS:
        return candidate
    try:
        raw = base64.b64decode(candidate, validate=True)
    except (binascii.Error, ValueError):
        return candidate
    return raw.hex() if len(raw) == hashlib.sha256().digest_size else candidate


def sign_vapi(body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    """The headers a Vapi HMAC credential with default settings sends for ``body`` at ``timestamp``."""
    digest = _hmac_hex(secret, str(timestamp).encode("ascii") + b"." + body)
    return {VAPI_SIGNATURE_HEADER: digest, VAPI_TIMESTAMP_HEADER: str(timestamp)}
