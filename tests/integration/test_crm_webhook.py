"""The signed webhook against a receiver on loopback that verifies signatures and rejects replays.

The receiver checks signatures with its own HMAC code, so a mistake shared by our signer and our
``verify_webhook_signature`` helper could not pass unnoticed; the helper has tests of its own
against a hand-computed signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from aftercall import aws
from aftercall.credentials import SecretCredentials
from aftercall.crm.base import Customer, Disposition, SummaryNote, SupportTicket
from aftercall.crm.webhook import (
    SECRET_KEYS,
    WebhookCrm,
    WebhookSignatureError,
    sign_webhook,
    verify_webhook_signature,
)
from aftercall.errors import (
    ConfigurationError,
    CrmCredentialsError,
    CrmRequestError,
    CrmUnavailableError,
    UnknownContactError,
)
from aftercall.handler import EndHandlerRuntime
from aftercall_ops.fakes.webhook_receiver import FakeWebhookReceiver
from end_function import end_function
from tests.support.crm import crm_call
from tests.support.events import CUSTOMER_EMAIL, CUSTOMER_PHONE, re_emitted, support_call_ended
from tests.support.lambda_context import lambda_context
from tests.support.stack import FAST_HTTP, HandlerPeers, create_secret, put_secret, unique

CUSTOMER = Customer(phone=CUSTOMER_PHONE, email=CUSTOMER_EMAIL)
HOOK = "/hooks/aftercall"


def _note(conversation_id: str | None = None, customer: Customer = CUSTOMER) -> SummaryNote:
    return SummaryNote(
        conversation_id=conversation_id or unique("conv"),
        customer=customer,
        occurred_at=datetime(2026, 11, 25, 9, 14, 50, tzinfo=UTC),
        summary={"topic": "billing", "sentiment": "Négative"},
    )


@pytest.fixture
def receiver() -> Iterator[FakeWebhookReceiver]:
    with FakeWebhookReceiver(secret=unique("whsec")) as fake:
        yield fake


def _secret_value(receiver: FakeWebhookReceiver, **extra: Any) -> dict[str, Any]:
    return {"url": receiver.endpoint, "signing_secret": receiver.secret, **extra}


@pytest.fixture
def secret_id(moto_endpoint: str, receiver: FakeWebhookReceiver) -> Iterator[str]:
    name = create_secret(unique("aftercall/crm"), _secret_value(receiver))
    yield name
    aws.client("secretsmanager").delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def _adapter(secret_id: str, url: str | None = None, **http: Any) -> WebhookCrm:
    credentials = SecretCredentials(secret_id, SECRET_KEYS, 300)
    return WebhookCrm(credentials, url, allow_loopback_http=True, **{**FAST_HTTP, **http})


@pytest.fixture
def webhook(secret_id: str) -> WebhookCrm:
    return _adapter(secret_id)


def _statuses(receiver: FakeWebhookReceiver) -> list[int | None]:
    return [r.status for r in receiver.requests_to("POST", HOOK)]


# --- the happy path ----------------------------------------------------------------------------


def test_a_summary_is_delivered_signed_and_verified(receiver: FakeWebhookReceiver, webhook: WebhookCrm) -> None:
    # Given a receiver holding the signing secret
    note = _note()
    # When the summary is logged
    record = webhook.log_summary(note, crm_call())
    # Then the receiver verified and kept exactly one delivery, with the contract's body and key
    (delivery,) = receiver.deliveries_for(note.conversation_id)
    assert delivery.key == f"{note.conversation_id}:log_summary"
    assert delivery.body == {
        "schema_version": "1",
        "action": "log_summary",
        "conversation_id": note.conversation_id,
        "unknown_caller_policy": "park",
        "customer": {"phone": CUSTOMER_PHONE, "email": CUSTOMER_EMAIL},
        "occurred_at": "2026-11-25T09:14:50+00:00",
        "summary": {"topic": "billing", "sentiment": "Négative"},
    }
    assert (record.kind, record.object_id, record.extra) == ("webhook", "wh_1", {"action": "log_summary"})
    (sent,) = receiver.requests_to("POST", HOOK)
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["x-aftercall-signature"].startswith("v1=")


def test_a_ticket_and_a_disposition_are_delivered_as_their_actions(
    receiver: FakeWebhookReceiver, webhook: WebhookCrm
) -> None:
    # Given one conversation with a ticket and a disposition
    conversation_id = unique("conv")
    # When both are delivered
    webhook.open_ticket(SupportTicket(conversation_id, CUSTOMER, "Charged twice", "Details", "HIGH"), crm_call())
    webhook.log_disposition(Disposition(conversation_id, CUSTOMER, "callback_requested", "mornings"), crm_call())
    # Then the receiver has one delivery per action, each under its own key
    ticket, disposition = receiver.deliveries_for(conversation_id)
    assert ticket.key == f"{conversation_id}:open_ticket"
    assert ticket.body["ticket"] == {"subject": "Charged twice", "description": "Details", "priority": "HIGH"}
    assert disposition.key == f"{conversation_id}:log_disposition"
    assert (disposition.body["disposition"], disposition.body["lead_status"], disposition.body["note"]) == (
        "callback_requested",
        "BAD_TIMING",
        "mornings",
    )


def test_a_receiver_answering_plain_ok_is_accepted(moto_endpoint: str) -> None:
    # Given a receiver that answers "OK" as text rather than JSON
    with FakeWebhookReceiver(plain_text=True) as plain:
        secret = create_secret(unique("aftercall/crm"), _secret_value(plain))
        note = _note()
        # When the summary is delivered
        record = _adapter(secret).log_summary(note, crm_call())
        # Then the delivery counts, and the result is the idempotency key
        assert record.object_id == f"{note.conversation_id}:log_summary"
        assert len(plain.deliveries) == 1


# --- never twice -------------------------------------------------------------------------------


def test_a_500_after_processing_is_redelivered_and_not_processed_twice(
    receiver: FakeWebhookReceiver, webhook: WebhookCrm
) -> None:
    # Given the receiver processes the first delivery but answers 500
    receiver.add_fault("after_commit_status", method="POST", path=HOOK, status=500, times=1)
    note = _note()
    # When the summary is delivered
    record = webhook.log_summary(note, crm_call())
    # Then it was sent again with the same body and key; the receiver replayed its first answer
    first, second = receiver.requests_to("POST", HOOK)
    assert (first.status, second.status) == (500, 200)
    assert first.body == second.body
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert len(receiver.deliveries_for(note.conversation_id)) == 1
    assert receiver.replays == 1
    assert record.object_id == "wh_1"


def test_a_reset_connection_is_redelivered_once(receiver: FakeWebhookReceiver, webhook: WebhookCrm) -> None:
    # Given the connection is reset during the first delivery
    receiver.add_fault("reset", method="POST", path=HOOK, times=1)
    note = _note()
    # When the summary is delivered
    webhook.log_summary(note, crm_call())
    # Then the receiver processed it once
    assert _statuses(receiver) == [None, 200]
    assert len(receiver.deliveries_for(note.conversation_id)) == 1


def test_a_delivery_that_times_out_is_sent_again(receiver: FakeWebhookReceiver, secret_id: str) -> None:
    # Given the receiver never answers the first delivery
    receiver.add_fault("hang", method="POST", path=HOOK, then="never", times=1)
    webhook = _adapter(secret_id, read_timeout=0.3)
    note = _note()
    # When the summary is delivered
    webhook.log_summary(note, crm_call())
    # Then the second attempt was processed, once
    assert _statuses(receiver) == [None, 200]
    assert len(receiver.deliveries_for(note.conversation_id)) == 1


def test_every_attempt_is_signed_afresh_over_the_same_body(receiver: FakeWebhookReceiver, webhook: WebhookCrm) -> None:
    # Given a delivery that needs two attempts
    receiver.add_fault("status", method="POST", path=HOOK, status=503, times=1)
    note = _note()
    # When it is delivered
    webhook.log_summary(note, crm_call())
    # Then each attempt carries a signature that verifies for its own timestamp and the same body
    first, second = receiver.requests_to("POST", HOOK)
    for attempt in (first, second):
        raw = json.dumps(attempt.body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        ts = attempt.headers["x-aftercall-timestamp"]
        verify_webhook_signature(receiver.secret, ts, raw, attempt.headers["x-aftercall-signature"])


# --- rate limits, refusals -------------------------------------------------------------------------


def test_a_429_retry_after_is_waited_out(receiver: FakeWebhookReceiver, webhook: WebhookCrm) -> None:
    # Given the receiver asks to slow down once, for one second
    receiver.add_fault("rate_limit", method="POST", path=HOOK, retry_after="1", times=1)
    # When the summary is delivered
    webhook.log_summary(_note(), crm_call())
    # Then the next attempt came no sooner than Retry-After after the 429 was sent
    limited, retried = receiver.requests_to("POST", HOOK)
    assert (limited.status, retried.status) == (429, 200)
    assert limited.answered is not None
    assert retried.received - limited.answered >= 1.0


def test_a_retry_after_beyond_the_deadline_gives_up_at_once(receiver: FakeWebhookReceiver, webhook: WebhookCrm) -> None:
    # Given the receiver asks to wait a minute, with two seconds left
    receiver.add_fault("rate_limit", method="POST", path=HOOK, retry_after="60", times=1)
    # When the summary is delivered
    # Then it gives up for a later retry
    with pytest.raises(CrmUnavailableError, match="would outlast this invocation"):
        webhook.log_summary(_note(), crm_call(2.0))
    assert receiver.deliveries == []


def test_a_4xx_refusal_is_not_retried(receiver: FakeWebhookReceiver, webhook: WebhookCrm) -> None:
    # Given the receiver refuses the delivery as invalid
    receiver.add_fault("status", method="POST", path=HOOK, status=400, body={"error": "bad_request", "message": "no"})
    # When the summary is delivered
    # Then the refusal carries the receiver's reason, after one attempt
    with pytest.raises(CrmRequestError, match="bad_request: no") as raised:
        webhook.log_summary(_note(), crm_call())
    assert raised.value.status == 400
    assert _statuses(receiver) == [400]


def test_an_unknown_customer_is_reported_with_the_phone_masked(
    receiver: FakeWebhookReceiver, webhook: WebhookCrm
) -> None:
    # Given a receiver that knows only one other customer
    receiver.set_known_customers(["+18885550000"])
    raw = "+14155559876"
    # When a summary for an unknown caller is delivered
    with pytest.raises(UnknownContactError) as raised:
        webhook.log_summary(_note(customer=Customer(phone=raw, email=None)), crm_call())
    # Then the error says so with the number masked, never in full
    assert "knows no customer with phone +141****9876" in str(raised.value)
    assert raw not in str(raised.value)
    assert receiver.deliveries == []


# --- secrets -------------------------------------------------------------------------------------


def test_a_rotated_signing_secret_is_read_again_from_the_secret(
    receiver: FakeWebhookReceiver, webhook: WebhookCrm, secret_id: str
) -> None:
    # Given a warm adapter that has read (and cached) the signing secret
    webhook.log_summary(_note(), crm_call())
    # When the receiver switches to a new secret and the new one is stored in the secret
    receiver.rotate_secret("whsec-rotated")
    put_secret(secret_id, _secret_value(receiver))
    note = _note()
    webhook.log_summary(note, crm_call())
    # Then the stale signature got one 401, the secret was re-read, and the delivery was verified
    assert _statuses(receiver) == [200, 401, 200]
    assert len(receiver.deliveries_for(note.conversation_id)) == 1


def test_a_signing_secret_nobody_stored_is_a_credentials_error(
    receiver: FakeWebhookReceiver, webhook: WebhookCrm
) -> None:
    # Given the receiver's secret changed but aftercall's secret was not updated
    receiver.rotate_secret("whsec-nobody-stored")
    # When the summary is delivered
    # Then, after one re-read of the secret, a specific credentials error is raised
    with pytest.raises(CrmCredentialsError, match=r"rejected the credentials \(401\) even after re-reading"):
        webhook.log_summary(_note(), crm_call())
    assert receiver.refused == ["invalid signature", "invalid signature"]


def test_a_plain_http_url_to_a_remote_host_is_refused(moto_endpoint: str) -> None:
    # Given a secret whose URL is plain HTTP to another machine
    secret = create_secret(unique("aftercall/crm"), {"url": "http://hooks.example.com/x", "signing_secret": "s"})
    # When the adapter is used
    # Then it refuses before sending anything
    with pytest.raises(ConfigurationError, match="outbound calls use HTTPS"):
        _adapter(secret).log_summary(_note(), crm_call())


# --- replays, as the receiver sees them ------------------------------------------------------------


def _signed_post(receiver: FakeWebhookReceiver, body: bytes, timestamp: int, key: str) -> requests.Response:
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": key,
        "X-Aftercall-Timestamp": str(timestamp),
        "X-Aftercall-Signature": sign_webhook(receiver.secret, timestamp, body),
    }
    return requests.post(receiver.endpoint, data=body, headers=headers, timeout=5)


def test_a_captured_request_replayed_later_is_refused(receiver: FakeWebhookReceiver) -> None:
    # Given a correctly signed request whose timestamp is ten minutes old (captured and replayed)
    body = b'{"action":"log_summary","conversation_id":"c-1"}'
    # When it reaches the receiver
    answer = _signed_post(receiver, body, int(time.time()) - 600, "c-1:log_summary")
    # Then it is refused and nothing is processed
    assert (answer.status_code, answer.json()) == (400, {"error": "stale timestamp"})
    assert receiver.deliveries == []


def test_a_verbatim_replay_inside_the_window_is_not_processed_twice(receiver: FakeWebhookReceiver) -> None:
    # Given a fresh signed request
    caller = b'"customer":{"phone":"+14155550134","email":null},"unknown_caller_policy":"park"'
    body = b'{"action":"log_summary","conversation_id":"c-2",' + caller + b"}"
    now = int(time.time())
    # When it is sent twice, then its key is reused for another body
    first = _signed_post(receiver, body, now, "c-2:log_summary")
    second = _signed_post(receiver, body, now, "c-2:log_summary")
    other_body = b'{"action":"log_summary","conversation_id":"c-3",' + caller + b"}"
    other = _signed_post(receiver, other_body, now, "c-2:log_summary")
    # Then the second gets the first answer without being processed; the reuse is refused
    assert (first.status_code, second.status_code, other.status_code) == (200, 200, 422)
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(receiver.deliveries) == 1


def test_a_tampered_body_fails_the_receivers_check(receiver: FakeWebhookReceiver) -> None:
    # Given a signature made for one body
    now = int(time.time())
    signature = sign_webhook(receiver.secret, now, b'{"a":1}')
    headers = {"Idempotency-Key": "k", "X-Aftercall-Timestamp": str(now), "X-Aftercall-Signature": signature}
    # When it arrives with another body
    answer = requests.post(receiver.endpoint, data=b'{"a":2}', headers=headers, timeout=5)
    # Then the receiver refuses it as unauthenticated
    assert answer.status_code == 401
    assert receiver.deliveries == []


# --- verify_webhook_signature, for receivers --------------------------------------------------------

BODY = b'{"action":"open_ticket","conversation_id":"conv-1"}'
SECRET = "whsec-test"
TS = "1764061490"
#: Computed independently of sign_webhook: HMAC-SHA256 over "<timestamp>.<body>".
EXPECTED = "v1=" + hmac.new(SECRET.encode(), TS.encode() + b"." + BODY, hashlib.sha256).hexdigest()


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    # Given a secret, a timestamp and a body
    # When they are signed
    # Then the result is v1= and the hex HMAC-SHA256 of "<timestamp>.<body>"
    assert sign_webhook(SECRET, TS, BODY) == EXPECTED
    assert sign_webhook(SECRET.encode(), int(TS), BODY) == EXPECTED


def test_a_valid_signature_verifies_including_one_of_several() -> None:
    # Given the right signature alone, and listed after another (a receiver mid-rotation)
    # When they are verified within the tolerance
    # Then both pass
    verify_webhook_signature(SECRET, TS, BODY, EXPECTED, now=int(TS) + 10)
    verify_webhook_signature(SECRET, TS, BODY, f"v1={'0' * 64}, {EXPECTED}", now=int(TS) + 10)


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "signature", "now", "reason"),
    [
        pytest.param(SECRET, TS, b'{"tampered":1}', EXPECTED, int(TS), "does not match", id="tampered-body"),
        pytest.param("other-secret", TS, BODY, EXPECTED, int(TS), "does not match", id="wrong-secret"),
        pytest.param(SECRET, str(int(TS) + 1), BODY, EXPECTED, int(TS), "does not match", id="other-timestamp"),
        pytest.param(SECRET, TS, BODY, EXPECTED, int(TS) + 301, "301s old", id="stale"),
        pytest.param(SECRET, TS, BODY, EXPECTED, int(TS) - 301, "in the future", id="future"),
        pytest.param(SECRET, None, BODY, EXPECTED, int(TS), "Timestamp header", id="no-timestamp"),
        pytest.param(SECRET, "yesterday", BODY, EXPECTED, int(TS), "malformed", id="bad-timestamp"),
        pytest.param(SECRET, TS, BODY, None, int(TS), "missing X-Aftercall-Signature", id="no-signature"),
        pytest.param(SECRET, TS, BODY, "sha256=abc", int(TS), "no v1= signature", id="other-scheme"),
        pytest.param(SECRET, TS, BODY, EXPECTED[:-2], int(TS), "does not match", id="truncated"),
    ],
)
def test_a_bad_request_is_refused_with_its_reason(
    secret: str, timestamp: str | None, body: bytes, signature: str | None, now: int, reason: str
) -> None:
    # Given a request that is wrong in one way
    # When it is verified
    # Then it is refused, saying why
    with pytest.raises(WebhookSignatureError, match=reason):
        verify_webhook_signature(secret, timestamp, body, signature, 300, now=now)


def test_the_tolerance_is_the_receivers_choice() -> None:
    # Given a request ten minutes old
    # When a receiver allowing fifteen minutes verifies it
    # Then it passes
    verify_webhook_signature(SECRET, TS, BODY, EXPECTED, tolerance_s=900, now=int(TS) + 600)


# --- the whole handler ---------------------------------------------------------------------------------


def test_the_handler_delivers_a_support_call_to_the_webhook_once(
    stack: HandlerPeers, receiver: FakeWebhookReceiver
) -> None:
    # Given a stack configured for the webhook (the runtime's own build_crm picks the adapter)
    secret = create_secret(unique("aftercall/crm"), _secret_value(receiver))
    runtime = EndHandlerRuntime(stack.settings(crm_provider="webhook", crm_secret_id=secret, crm_base_url=None))
    event = support_call_ended()
    conversation_id = event["detail"]["conversation_id"]
    # When a support call is processed, and then emitted again
    report = runtime.handle(event, lambda_context(), end_function)
    again = runtime.handle(re_emitted(event), lambda_context(), end_function)
    # Then the receiver processed one summary and one ticket, and the duplicate sent nothing
    deliveries = {d.body["action"]: d for d in receiver.deliveries_for(conversation_id)}
    assert set(deliveries) == {"log_summary", "open_ticket"}
    assert deliveries["open_ticket"].body["ticket"]["subject"] == "Charged twice for the November invoice"
    assert deliveries["log_summary"].body["summary"]["topic"] == "billing"
    assert report["status"] == "processed"
    assert again["duplicate"] is True
    assert len(receiver.requests_to("POST", HOOK)) == 2
    assert stack.parked() == []


# --- the caller ------------------------------------------------------------------------------------


def test_a_new_caller_is_passed_with_their_name_and_created_once_by_the_receiver(
    receiver: FakeWebhookReceiver, secret_id: str
) -> None:
    # Given a receiver that knows only the default customer, and UnknownCallerPolicy=create
    receiver.set_known_customers([CUSTOMER_PHONE])
    webhook = _adapter(secret_id, unknown_caller_policy="create")
    caller = Customer("+14155550199", None, "Ada", "Lovelace")
    # When two conversations of a new caller (name collected by the agent) are delivered
    first = webhook.log_summary(_note(customer=caller), crm_call())
    second = webhook.log_summary(_note(customer=caller), crm_call())
    # Then the receiver got the caller in E.164 with the name and the policy, validated it, made
    # their record once, and said so in its answers
    assert receiver.created_callers == ["+14155550199"]
    assert (first.extra["caller"], second.extra["caller"]) == ("created", "found")
    body = receiver.deliveries[0].body
    assert body["customer"] == {"phone": "+14155550199", "email": None, "first_name": "Ada", "last_name": "Lovelace"}
    assert body["unknown_caller_policy"] == "create"
    assert receiver.refused == []


def test_under_park_an_unknown_caller_is_refused_by_the_receiver(receiver: FakeWebhookReceiver, secret_id: str) -> None:
    # Given a receiver that knows only the default customer, and UnknownCallerPolicy=park
    receiver.set_known_customers([CUSTOMER_PHONE])
    # When a new caller's summary is delivered
    with pytest.raises(UnknownContactError):
        _adapter(secret_id, unknown_caller_policy="park").log_summary(
            _note(customer=Customer("+14155550198", None)), crm_call()
        )
    # Then no record was made for them
    assert receiver.created_callers == []
