"""Standard Webhooks on the generic ingest endpoint, signed by the scheme's own reference library.

A team bridging its platform can sign with any Standard Webhooks or Svix library (``webhook-id``,
``webhook-timestamp``, ``webhook-signature: v1,<base64>``, ``whsec_`` secrets); the older
``X-Aftercall-Signature`` keeps working (tests/unit/test_ingest_signatures.py).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from aftercall import aws
from aftercall.ingest import signatures
from aftercall.ingest.errors import SignatureError
from aftercall.ingest.service import IngestService, WebhookRequest
from tests.support.ingest import SECRETS, encode, ops_target, sample, settings_for  # noqa: F401 - fixture
from tests.support.ops import OpsTarget

SECRET = "whsec_" + base64.b64encode(b"aftercall-standard-webhooks-test-key-32b").decode()
PREVIOUS = "whsec_" + base64.b64encode(b"the-key-before-the-rotation-of-last-week").decode()


def signed(body: bytes, secret: str = SECRET, *, at: float | None = None, msg_id: str | None = None) -> dict[str, str]:
    """The three headers a sender using the reference library puts on ``body``."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    message_id = msg_id or f"msg_{uuid.uuid4().hex}"
    signature = Webhook(secret).sign(message_id, moment, body.decode("utf-8"))
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
    }


def verify(body: bytes, headers: dict[str, str], secrets: list[str] | None = None) -> None:
    signatures.verify_generic(body, headers, secrets or [SECRET], time.time())


def test_a_request_signed_by_the_reference_library_verifies() -> None:
    body = encode(sample("generic"))
    verify(body, signed(body))


def test_the_reference_library_verifies_what_it_signs_so_the_test_signer_is_the_real_one() -> None:
    # Given a body and our verifier's view of the key
    body = encode(sample("generic"))
    headers = signed(body)
    # Then the library itself accepts the headers (the signer is not a copy of ours)
    Webhook(SECRET).verify(body, headers)
    assert signatures.standard_webhooks_key(SECRET) == b"aftercall-standard-webhooks-test-key-32b"


def test_several_signatures_pass_when_one_matches_and_other_versions_are_skipped() -> None:
    # Given a sender mid-rotation: signed with the old and the new key, plus an asymmetric v1a entry
    body = encode(sample("generic"))
    headers = signed(body, PREVIOUS)
    new = signed(body, SECRET, msg_id=headers["webhook-id"], at=float(headers["webhook-timestamp"]))
    headers["webhook-signature"] = f"v1a,AAAA {headers['webhook-signature']} {new['webhook-signature']}"
    # When only the new key is configured, Then it verifies
    verify(body, headers, [SECRET])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda h, b: (h, b + b" "), "signature_mismatch"),
        (lambda h, b: ({**h, "webhook-id": "msg_other"}, b), "signature_mismatch"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-id"}, b), "missing_signature"),
        (lambda h, b: ({**h, "webhook-timestamp": str(int(time.time()) - 301)}, b), "timestamp_outside_tolerance"),
        (lambda h, b: ({**h, "webhook-timestamp": str(int(time.time()) + 400)}, b), "timestamp_outside_tolerance"),
        (lambda h, b: ({**h, "webhook-signature": "v1a,AAAA"}, b), "malformed_signature"),
        (lambda h, b: ({**h, "webhook-signature": "v1,not base64!"}, b), "malformed_signature"),
    ],
    ids=["body", "id", "no-id", "stale", "future", "no-v1", "not-base64"],
)
def test_a_changed_or_incomplete_request_is_refused_with_a_reason(change: object, reason: str) -> None:
    body = encode(sample("generic"))
    headers, sent = change(signed(body), body)  # type: ignore[operator]
    with pytest.raises(SignatureError) as refused:
        verify(sent, headers)
    assert refused.value.reason == reason


def test_the_wrong_key_is_a_mismatch() -> None:
    body = encode(sample("generic"))
    with pytest.raises(SignatureError) as refused:
        verify(body, signed(body, PREVIOUS))
    assert refused.value.reason == "signature_mismatch"


@pytest.fixture
def whsec_secret_id(moto_endpoint: str) -> Iterator[str]:
    name = f"aftercall/ingest-{uuid.uuid4().hex[:10]}"
    aws.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps({**SECRETS, "generic": SECRET}))
    yield name
    aws.client("secretsmanager").delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def test_the_generic_endpoint_puts_a_standard_webhook_on_the_bus(
    ops_target: OpsTarget,  # noqa: F811 - the fixture imported above
    whsec_secret_id: str,
) -> None:
    # Given the stack's generic secret set to a whsec_ secret, and a detail signed with it by the library
    service = IngestService(settings_for(ops_target, whsec_secret_id))
    payload = sample("generic")
    body = encode(payload)
    headers = {**signed(body), "content-type": "application/json"}
    # When it is posted to /generic
    response = service.handle(WebhookRequest("POST", "/generic", headers, body))
    # Then it is accepted and exactly that conversation reaches the bus
    assert response.status == 200, response.body
    (event,) = ops_target.delivered()
    assert event["detail"]["conversation_id"] == payload["conversation_id"]
    # And a forged copy is refused with a 401 and nothing more reaches the bus
    forged = service.handle(WebhookRequest("POST", "/generic", {**headers, "webhook-id": "msg_forged"}, body))
    assert (forged.status, forged.body["error"]) == (401, "signature_mismatch")
    assert ops_target.delivered() == []
