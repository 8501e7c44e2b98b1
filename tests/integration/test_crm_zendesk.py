"""The Zendesk adapter against the fake Zendesk over HTTP, its secret in Secrets Manager (moto).

Each test injects one real-world failure at the HTTP level and checks what the account ends up
holding (exactly one ticket per conversation and action, the right user field, the right error),
never how our functions were called.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from aftercall import aws
from aftercall.credentials import SecretCredentials
from aftercall.crm.base import Customer, Disposition, SummaryNote, SupportTicket
from aftercall.crm.zendesk import SECRET_KEYS, ZendeskCrm, idempotency_key
from aftercall.errors import (
    ConfigurationError,
    CrmCredentialsError,
    CrmUnavailableError,
    UnknownContactError,
)
from aftercall.handler import EndHandlerRuntime
from aftercall_ops.fakes.zendesk import FakeZendesk
from end_function import end_function
from tests.support.crm import crm_call
from tests.support.events import CUSTOMER_EMAIL, CUSTOMER_PHONE, outbound_call_ended, re_emitted, support_call_ended
from tests.support.lambda_context import lambda_context
from tests.support.stack import FAST_HTTP, HandlerPeers, create_secret, put_secret, unique

CUSTOMER = Customer(phone=CUSTOMER_PHONE, email=None)
TICKETS = "/api/v2/tickets$"
USER_SEARCH = "/api/v2/users/search"
PHONE_SEARCH = "/api/v2/search"


def _note(conversation_id: str | None = None, customer: Customer = CUSTOMER) -> SummaryNote:
    return SummaryNote(
        conversation_id=conversation_id or unique("conv"),
        customer=customer,
        occurred_at=datetime(2026, 11, 25, 9, 14, 50, tzinfo=UTC),
        summary={"topic": "billing", "sentiment": "Negative", "turns": 14},
    )


def _ticket(conversation_id: str | None = None, customer: Customer = CUSTOMER) -> SupportTicket:
    return SupportTicket(conversation_id or unique("conv"), customer, "Charged twice", "Two charges of 49.00", "URGENT")


@pytest.fixture
def zendesk_fake() -> Iterator[FakeZendesk]:
    """A running fake account with its own API token and the default customer as an end user."""
    with FakeZendesk(email="bot@acme.example", api_token=unique("zd-token")) as fake:
        fake.add_user(phone=CUSTOMER_PHONE, email=CUSTOMER_EMAIL)
        yield fake


def _secret_value(fake: FakeZendesk, **extra: Any) -> dict[str, Any]:
    return {"subdomain": "acme", "email": fake.email, "api_token": fake.api_token, **extra}


@pytest.fixture
def secret_id(moto_endpoint: str, zendesk_fake: FakeZendesk) -> Iterator[str]:
    name = create_secret(unique("aftercall/crm"), _secret_value(zendesk_fake))
    yield name
    aws.client("secretsmanager").delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def _adapter(secret_id: str, base_url: str | None, **http: Any) -> ZendeskCrm:
    credentials = SecretCredentials(secret_id, SECRET_KEYS, 300)
    return ZendeskCrm(credentials, base_url, allow_loopback_http=True, **{**FAST_HTTP, **http})


@pytest.fixture
def zendesk(secret_id: str, zendesk_fake: FakeZendesk) -> ZendeskCrm:
    return _adapter(secret_id, zendesk_fake.url)


def _user_id(fake: FakeZendesk) -> int:
    return int(fake.users[0]["id"])


def _statuses(fake: FakeZendesk, method: str, path: str) -> list[int | None]:
    return [r.status for r in fake.requests_to(method, path)]


# --- the happy path ----------------------------------------------------------------------------


def test_a_summary_is_an_internal_note_opening_a_call_ticket(zendesk_fake: FakeZendesk, zendesk: ZendeskCrm) -> None:
    # Given a customer known to Zendesk by phone
    note = _note()
    # When the summary is logged
    record = zendesk.log_summary(note, crm_call())
    # Then one ticket exists for the call, requested by the customer, tagged for triggers, and its
    # only comment is private (the customer is not emailed the summary)
    (ticket,) = zendesk_fake.tickets_for(note.conversation_id)
    assert record.kind == "ticket"
    assert record.object_id == str(ticket["id"])
    assert ticket["requester_id"] == _user_id(zendesk_fake)
    assert ticket["subject"] == "Call summary: billing"
    assert ticket["tags"] == ["aftercall", "aftercall_call_summary"]
    assert ticket["external_id"] == idempotency_key(note.conversation_id, "crm_summary")
    (comment,) = zendesk_fake.comments(ticket["id"])
    assert comment["public"] is False
    assert "sentiment: Negative" in comment["body"]
    assert "turns: 14" in comment["body"]


def test_a_ticket_carries_its_idempotency_key_and_mapped_priority(
    zendesk_fake: FakeZendesk, zendesk: ZendeskCrm
) -> None:
    # Given an urgent support ticket
    ticket = _ticket()
    # When it is opened
    record = zendesk.open_ticket(ticket, crm_call())
    # Then the create carried the key Zendesk deduplicates on, and the ticket is urgent
    (stored,) = zendesk_fake.tickets_for(ticket.conversation_id)
    assert record.object_id == str(stored["id"])
    assert (stored["subject"], stored["priority"]) == ("Charged twice", "urgent")
    (create,) = zendesk_fake.requests_to("POST", TICKETS)
    assert create.headers["idempotency-key"] == f"aftercall:{ticket.conversation_id}:support_ticket"
    assert "authorization" not in create.headers  # credentials never reach the request log


def test_a_disposition_sets_the_customers_user_field(zendesk_fake: FakeZendesk, zendesk: ZendeskCrm) -> None:
    # Given the customer as an end user with the disposition user field
    # When an outbound call's disposition is logged
    record = zendesk.log_disposition(Disposition(unique("conv"), CUSTOMER, "meeting_booked"), crm_call())
    # Then the user field holds it
    user = zendesk_fake.user(_user_id(zendesk_fake))
    assert user is not None
    assert user["user_fields"]["aftercall_disposition"] == "meeting_booked"
    assert record.extra == {"user_field": "aftercall_disposition", "value": "meeting_booked"}


def test_a_missing_user_field_is_a_configuration_error_naming_the_fix(moto_endpoint: str) -> None:
    # Given an account without the disposition user field (Zendesk drops values for unknown fields)
    with FakeZendesk(user_fields=()) as bare:
        bare.add_user(phone=CUSTOMER_PHONE)
        secret = create_secret(unique("aftercall/crm"), _secret_value(bare))
        # When a disposition is logged
        # Then the error names the field and how to fix it
        with pytest.raises(ConfigurationError, match=r"did not store user field 'aftercall_disposition'.*docs/crm.md"):
            _adapter(secret, bare.url).log_disposition(Disposition(unique("conv"), CUSTOMER, "busy"), crm_call())


def test_the_disposition_field_can_be_named_in_the_secret(zendesk_fake: FakeZendesk, moto_endpoint: str) -> None:
    # Given an account whose field has another key, named in the secret
    zendesk_fake.define_user_field("call_outcome")
    secret = create_secret(unique("aftercall/crm"), _secret_value(zendesk_fake, disposition_user_field="call_outcome"))
    # When a disposition is logged
    _adapter(secret, zendesk_fake.url).log_disposition(Disposition(unique("conv"), CUSTOMER, "voicemail"), crm_call())
    # Then that field holds it
    user = zendesk_fake.user(_user_id(zendesk_fake))
    assert user is not None
    assert user["user_fields"]["call_outcome"] == "voicemail"


# --- never twice -------------------------------------------------------------------------------


def test_a_500_after_the_ticket_was_made_is_replayed_not_duplicated(
    zendesk_fake: FakeZendesk, zendesk: ZendeskCrm
) -> None:
    # Given Zendesk creates the first ticket but answers 500 (the ambiguous case)
    zendesk_fake.add_fault("after_commit_status", method="POST", path=TICKETS, status=500, times=1)
    ticket = _ticket()
    # When the ticket is opened
    record = zendesk.open_ticket(ticket, crm_call())
    # Then the create was sent again with the same key, Zendesk replayed its first answer, and
    # there is exactly one ticket
    (stored,) = zendesk_fake.tickets_for(ticket.conversation_id)
    assert record.object_id == str(stored["id"])
    assert _statuses(zendesk_fake, "POST", TICKETS) == [500, 201]
    assert zendesk_fake.idempotent_replays == 1


def test_a_reset_during_the_create_leaves_one_ticket(zendesk_fake: FakeZendesk, zendesk: ZendeskCrm) -> None:
    # Given the connection is reset while the summary's ticket create is in flight
    zendesk_fake.add_fault("reset", method="POST", path=TICKETS, times=1)
    note = _note()
    # When the summary is logged
    zendesk.log_summary(note, crm_call())
    # Then exactly one ticket exists
    assert len(zendesk_fake.tickets_for(note.conversation_id)) == 1
    assert _statuses(zendesk_fake, "POST", TICKETS) == [None, 201]


def test_a_timed_out_create_is_sent_again_under_the_same_key(zendesk_fake: FakeZendesk, secret_id: str) -> None:
    # Given the first ticket create never gets an answer
    zendesk_fake.add_fault("hang", method="POST", path=TICKETS, then="never", times=1)
    zendesk = _adapter(secret_id, zendesk_fake.url, read_timeout=0.3)
    ticket = _ticket()
    # When the ticket is opened
    zendesk.open_ticket(ticket, crm_call())
    # Then both attempts carried the same key and there is one ticket
    assert len(zendesk_fake.tickets_for(ticket.conversation_id)) == 1
    keys = {r.headers["idempotency-key"] for r in zendesk_fake.requests_to("POST", TICKETS)}
    assert keys == {idempotency_key(ticket.conversation_id, "support_ticket")}


def test_a_retry_after_the_idempotency_window_finds_the_ticket_by_external_id(
    zendesk_fake: FakeZendesk, zendesk: ZendeskCrm
) -> None:
    # Given a ticket made by an attempt whose outcome was never recorded, and Zendesk's two-hour
    # idempotency window has passed (a replay from the failed-events queue)
    ticket = _ticket()
    first = zendesk.open_ticket(ticket, crm_call())
    zendesk_fake.expire_idempotency_keys()
    # When the action runs again, recovering
    again = zendesk.open_ticket(ticket, crm_call(recovering=True))
    # Then the ticket was found by its external id and none was created
    assert again.object_id == first.object_id
    assert len(zendesk_fake.tickets_for(ticket.conversation_id)) == 1
    assert _statuses(zendesk_fake, "POST", TICKETS) == [201]


def test_a_changed_body_under_the_same_key_finds_the_first_ticket(
    zendesk_fake: FakeZendesk, zendesk: ZendeskCrm
) -> None:
    # Given a summary ticket already made for the conversation
    note = _note()
    first = zendesk.log_summary(note, crm_call())
    # When a retry (not known to be recovering) sends a different summary for the same conversation
    changed = SummaryNote(note.conversation_id, note.customer, note.occurred_at, {"topic": "billing", "turns": 15})
    again = zendesk.log_summary(changed, crm_call())
    # Then Zendesk refused the mismatched key, the adapter found the first ticket: still one
    assert again.object_id == first.object_id
    assert _statuses(zendesk_fake, "POST", TICKETS) == [201, 400]
    assert len(zendesk_fake.tickets_for(note.conversation_id)) == 1


# --- rate limits -------------------------------------------------------------------------------------


def test_a_429_retry_after_is_waited_out(zendesk_fake: FakeZendesk, zendesk: ZendeskCrm) -> None:
    # Given Zendesk rate-limits the caller search once, asking for one second
    zendesk_fake.add_fault("rate_limit", path=PHONE_SEARCH, retry_after="1", times=1)
    note = _note()
    # When the summary is logged
    zendesk.log_summary(note, crm_call())
    # Then the next search reached Zendesk no sooner than Retry-After after the 429 was sent
    limited, retried = zendesk_fake.requests_to("GET", PHONE_SEARCH)
    assert (limited.status, retried.status) == (429, 200)
    assert limited.answered is not None
    assert retried.received - limited.answered >= 1.0
    assert len(zendesk_fake.tickets_for(note.conversation_id)) == 1


def test_a_retry_after_beyond_the_deadline_gives_up_at_once(zendesk_fake: FakeZendesk, zendesk: ZendeskCrm) -> None:
    # Given Zendesk asks to wait a minute, with two seconds left in the invocation
    zendesk_fake.add_fault("rate_limit", method="POST", path=TICKETS, retry_after="60", times=1)
    # When a ticket is opened
    # Then it gives up for a later retry; nothing was created
    with pytest.raises(CrmUnavailableError, match="would outlast this invocation"):
        zendesk.open_ticket(_ticket(), crm_call(2.0))
    assert zendesk_fake.tickets == []


# --- credentials -----------------------------------------------------------------------------


def test_a_rotated_api_token_is_read_again_from_the_secret(
    zendesk_fake: FakeZendesk, zendesk: ZendeskCrm, secret_id: str
) -> None:
    # Given a warm adapter that has read (and cached) the secret
    zendesk.log_summary(_note(), crm_call())
    # When the API token is rotated in Zendesk and stored in the secret
    zendesk_fake.rotate_api_token("zd-token-rotated")
    put_secret(secret_id, _secret_value(zendesk_fake))
    ticket = _ticket()
    zendesk.open_ticket(ticket, crm_call())
    # Then the stale token got one 401, the secret was re-read, and the ticket was made
    assert len(zendesk_fake.tickets_for(ticket.conversation_id)) == 1
    assert _statuses(zendesk_fake, "POST", TICKETS) == [201, 401, 201]


def test_a_token_nobody_stored_is_a_credentials_error(zendesk_fake: FakeZendesk, zendesk: ZendeskCrm) -> None:
    # Given the API token was rotated in Zendesk but the secret was not updated
    zendesk_fake.rotate_api_token("zd-token-nobody-stored")
    # When a ticket is opened
    # Then, after one re-read of the secret, a specific credentials error is raised
    with pytest.raises(CrmCredentialsError, match=r"rejected the credentials \(401\) even after re-reading"):
        zendesk.open_ticket(_ticket(), crm_call())
    assert zendesk_fake.tickets == []


def test_without_a_base_url_the_subdomain_makes_an_https_url(secret_id: str) -> None:
    # Given no base URL override
    # When the adapter builds its client from the secret
    zendesk = _adapter(secret_id, None)
    # Then it talks HTTPS to the account's zendesk.com host
    assert zendesk.http.base_url == "https://acme.zendesk.com"


def test_a_subdomain_that_is_not_one_is_refused(zendesk_fake: FakeZendesk, moto_endpoint: str) -> None:
    # Given a secret whose subdomain is a whole URL
    secret = create_secret(unique("aftercall/crm"), _secret_value(zendesk_fake, subdomain="https://evil.example/x"))
    # When the adapter is used
    # Then it says what a subdomain is, before any request
    with pytest.raises(ConfigurationError, match="is not a Zendesk subdomain"):
        _adapter(secret, None).log_summary(_note(), crm_call())


# --- contacts ------------------------------------------------------------------------------------


def test_an_unknown_caller_is_reported_with_the_phone_masked(zendesk_fake: FakeZendesk, zendesk: ZendeskCrm) -> None:
    # Given a caller Zendesk does not know
    raw = "+14155559876"
    # When the summary is logged
    with pytest.raises(UnknownContactError) as raised:
        zendesk.log_summary(_note(customer=Customer(phone=raw, email="new.caller@example.com")), crm_call())
    # Then the error says so with the phone and email masked, and nothing was created
    assert "no zendesk record with phone +141****9876 or email n***@example.com" in str(raised.value)
    assert raw not in str(raised.value)
    assert "new.caller" not in str(raised.value)
    assert zendesk_fake.tickets == []


def test_a_partial_phone_match_is_not_taken_for_the_customer(zendesk_fake: FakeZendesk, zendesk: ZendeskCrm) -> None:
    # Given a user whose longer number contains the customer's, listed first by Zendesk's partial search
    zendesk_fake.add_user(phone="+141555507771", name="Someone Else")
    customer_id = zendesk_fake.add_user(phone="+14155550777", name="The Caller")
    # When the summary is logged for the caller
    zendesk.log_summary(_note(customer=Customer(phone="+14155550777", email=None)), crm_call())
    # Then the ticket is the caller's, not the other user's
    (ticket,) = zendesk_fake.tickets
    assert ticket["requester_id"] == customer_id


def test_a_chat_customer_is_found_by_email(zendesk_fake: FakeZendesk, zendesk: ZendeskCrm) -> None:
    # Given a chat customer known only by email (in another case)
    note = _note(customer=Customer(phone=None, email=CUSTOMER_EMAIL.upper()))
    # When the summary is logged
    zendesk.log_summary(note, crm_call())
    # Then the ticket is theirs
    (ticket,) = zendesk_fake.tickets_for(note.conversation_id)
    assert ticket["requester_id"] == _user_id(zendesk_fake)


# --- the fake itself -------------------------------------------------------------------------------


def test_the_fake_honours_idempotency_keys_as_zendesk_documents(zendesk_fake: FakeZendesk) -> None:
    # Given a ticket body and a key
    user_id = _user_id(zendesk_fake)
    body = {"ticket": {"subject": "s", "comment": {"body": "b"}, "requester_id": user_id}}
    pair = f"{zendesk_fake.email}/token:{zendesk_fake.api_token}".encode()
    headers = {"Authorization": f"Basic {base64.b64encode(pair).decode()}", "Idempotency-Key": "k-1"}
    url = f"{zendesk_fake.url}/api/v2/tickets"
    with requests.Session() as http:
        # When the same body is sent twice, then another body under the same key, then no key twice
        first = http.post(url, json=body, headers=headers)
        replay = http.post(url, json=body, headers=headers)
        mismatch = http.post(url, json={"ticket": {**body["ticket"], "subject": "t"}}, headers=headers)
        plain = {"Authorization": headers["Authorization"]}
        unkeyed = [http.post(url, json=body, headers=plain).status_code for _ in range(2)]
    # Then the repeat replays the first answer (hit), the mismatch is a 400, unkeyed creates twice
    assert (first.status_code, first.headers["x-idempotency-lookup"]) == (201, "miss")
    assert (replay.status_code, replay.headers["x-idempotency-lookup"]) == (201, "hit")
    assert replay.json() == first.json()
    assert (mismatch.status_code, mismatch.json()["error"]) == (400, "IdempotentRequestError")
    assert unkeyed == [201, 201]
    assert len(zendesk_fake.tickets) == 3


# --- the whole handler ---------------------------------------------------------------------------------


def test_the_handler_writes_a_support_call_to_zendesk_once(stack: HandlerPeers, zendesk_fake: FakeZendesk) -> None:
    # Given a stack configured for Zendesk (the runtime's own build_crm picks the adapter)
    secret = create_secret(unique("aftercall/crm"), _secret_value(zendesk_fake))
    runtime = EndHandlerRuntime(
        stack.settings(crm_provider="zendesk", crm_secret_id=secret, crm_base_url=zendesk_fake.url)
    )
    event = support_call_ended()
    conversation_id = event["detail"]["conversation_id"]
    # When a support call is processed, and then emitted again
    report = runtime.handle(event, lambda_context(), end_function)
    again = runtime.handle(re_emitted(event), lambda_context(), end_function)
    # Then there is one call-summary ticket and one support ticket, and the duplicate made nothing
    tickets = {t["external_id"]: t for t in zendesk_fake.tickets_for(conversation_id)}
    summary = tickets[idempotency_key(conversation_id, "crm_summary")]
    support = tickets[idempotency_key(conversation_id, "support_ticket")]
    assert len(tickets) == 2
    assert report["actions"]["crm_summary"]["result"]["object_id"] == str(summary["id"])
    assert report["actions"]["support_ticket"]["result"]["object_id"] == str(support["id"])
    assert (support["subject"], support["priority"]) == ("Charged twice for the November invoice", "high")
    assert again["duplicate"] is True
    assert len(zendesk_fake.requests_to("POST", TICKETS)) == 2
    assert stack.parked() == []


def test_the_handler_records_an_outbound_disposition_on_the_user(
    stack: HandlerPeers, zendesk_fake: FakeZendesk
) -> None:
    # Given a stack configured for Zendesk and an outbound call whose prospect is interested
    secret = create_secret(unique("aftercall/crm"), _secret_value(zendesk_fake))
    runtime = EndHandlerRuntime(
        stack.settings(crm_provider="zendesk", crm_secret_id=secret, crm_base_url=zendesk_fake.url)
    )
    # When it is processed
    report = runtime.handle(outbound_call_ended(), lambda_context(), end_function)
    # Then the user field says so
    assert report["actions"]["disposition"]["status"] == "done"
    user = zendesk_fake.user(_user_id(zendesk_fake))
    assert user is not None
    assert user["user_fields"]["aftercall_disposition"] == "interested"
