"""The Salesforce adapter against the fake Salesforce over HTTP, its secret in Secrets Manager (moto).

Each test injects one real-world failure at the HTTP level and checks what the org ends up
holding (exactly one Task or Case per conversation, the right Lead Status, the right error),
never how our functions were called.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from aftercall import aws
from aftercall.credentials import SecretCredentials
from aftercall.crm.base import Customer, Disposition, SummaryNote, SupportTicket
from aftercall.crm.salesforce import SECRET_KEYS, SalesforceCrm
from aftercall.crm.salesforce_callers import caller_search, phone_forms
from aftercall.errors import (
    ConfigurationError,
    CrmCredentialsError,
    CrmRequestError,
    CrmUnavailableError,
    SecretError,
    UnknownContactError,
)
from aftercall.handler import EndHandlerRuntime
from aftercall_ops.fakes.salesforce import FakeSalesforce
from aftercall_ops.fakes.salesforce_org import DEFAULT_EXTERNAL_ID_FIELD as EXT_ID
from end_function import end_function
from tests.support.crm import crm_call
from tests.support.events import CUSTOMER_EMAIL, CUSTOMER_PHONE, outbound_call_ended, re_emitted, support_call_ended
from tests.support.lambda_context import lambda_context
from tests.support.stack import FAST_HTTP, HandlerPeers, create_secret, put_secret, unique

CUSTOMER = Customer(phone=CUSTOMER_PHONE, email=None)
API = "/services/data/v62.0"
TOKEN = "/services/oauth2/token$"
QUERY = f"{API}/query"
SEARCH = f"{API}/search"
TASKS = f"{API}/sobjects/Task/{EXT_ID}/"
CASES = f"{API}/sobjects/Case/{EXT_ID}/"


def _note(conversation_id: str | None = None, customer: Customer = CUSTOMER) -> SummaryNote:
    return SummaryNote(
        conversation_id=conversation_id or unique("conv"),
        customer=customer,
        occurred_at=datetime(2026, 11, 25, 9, 14, 50, tzinfo=UTC),
        summary={"topic": "billing", "sentiment": "Negative", "collected": {"invoice": "INV-1"}},
    )


def _ticket(conversation_id: str | None = None, customer: Customer = CUSTOMER) -> SupportTicket:
    return SupportTicket(conversation_id or unique("conv"), customer, "Charged twice", "Two charges of 49.00", "URGENT")


@pytest.fixture
def org() -> Iterator[FakeSalesforce]:
    """A running fake org with its own client credentials, and the default customer as a Contact
    and as an open Lead."""
    with FakeSalesforce(client_id=unique("3MVG9"), client_secret=unique("sf-secret")) as fake:
        fake.add_contact(phone=CUSTOMER_PHONE, email=CUSTOMER_EMAIL, FirstName="Jane")
        fake.add_lead(phone=CUSTOMER_PHONE, email=CUSTOMER_EMAIL, FirstName="Jane")
        yield fake


def _secret_value(org: FakeSalesforce, **extra: Any) -> dict[str, Any]:
    return {"client_id": org.client_id, "client_secret": org.client_secret, "instance_url": org.url, **extra}


@pytest.fixture
def secret_id(moto_endpoint: str, org: FakeSalesforce) -> Iterator[str]:
    name = create_secret(unique("aftercall/crm"), _secret_value(org))
    yield name
    aws.client("secretsmanager").delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def _adapter(secret_id: str, **http: Any) -> SalesforceCrm:
    credentials = SecretCredentials(secret_id, SECRET_KEYS, 300)
    return SalesforceCrm(credentials, allow_loopback_http=True, **{**FAST_HTTP, **http})


@pytest.fixture
def salesforce(secret_id: str) -> SalesforceCrm:
    return _adapter(secret_id)


def _contact_id(org: FakeSalesforce) -> str:
    return str(org.records("Contact")[0]["Id"])


def _lead(org: FakeSalesforce) -> dict[str, Any]:
    return org.records("Lead")[0]


def _statuses(org: FakeSalesforce, method: str, path: str) -> list[int | None]:
    return [r.status for r in org.requests_to(method, path)]


# --- the happy path ----------------------------------------------------------------------------


def test_a_summary_is_one_completed_task_upserted_on_the_conversation_id(
    org: FakeSalesforce, salesforce: SalesforceCrm
) -> None:
    # Given a customer known to the org as a Contact (and as a Lead)
    note = _note()
    # When the summary is logged
    record = salesforce.log_summary(note, crm_call())
    # Then exactly one Task carries the conversation id in its external-id field, on the Contact
    (task,) = org.tasks_for(note.conversation_id)
    assert record.kind == "task"
    assert record.object_id == task["Id"]
    assert record.extra == {"who_id": _contact_id(org)}
    assert task["WhoId"] == _contact_id(org)
    assert (task["Status"], task["Priority"], task["ActivityDate"]) == ("Completed", "Normal", "2026-11-25")
    assert task["Subject"] == "Call summary: billing"
    assert "sentiment: Negative" in task["Description"]
    assert 'collected: {"invoice": "INV-1"}' in task["Description"]
    # and it was one upsert (201 created), after one token request and one SOQL query
    assert _statuses(org, "PATCH", TASKS) == [201]
    assert org.token_requests == 1


def test_a_summary_for_a_lead_only_customer_is_a_task_on_the_lead(
    org: FakeSalesforce, salesforce: SalesforceCrm
) -> None:
    # Given a prospect known only as a Lead, by email
    lead_id = org.add_lead(email="prospect@example.com")
    note = _note(customer=Customer(phone=None, email="Prospect@Example.com"))
    # When the summary is logged
    salesforce.log_summary(note, crm_call())
    # Then the Task is on the Lead (SOQL compares text without case)
    (task,) = org.tasks_for(note.conversation_id)
    assert task["WhoId"] == lead_id


def test_a_ticket_is_one_case_on_the_contact_with_the_priority_mapped(
    org: FakeSalesforce, salesforce: SalesforceCrm
) -> None:
    # Given an urgent support ticket
    ticket = _ticket()
    # When it is opened
    record = salesforce.open_ticket(ticket, crm_call())
    # Then one Case exists for the conversation, on the Contact, High (Salesforce has no Urgent),
    # with the org's default Status
    (case,) = org.cases_for(ticket.conversation_id)
    assert record.object_id == case["Id"]
    assert record.extra == {"contact_id": _contact_id(org)}
    assert (case["Subject"], case["Priority"], case["Status"]) == ("Charged twice", "High", "New")
    assert case["Description"].startswith("Two charges of 49.00")


def test_a_disposition_sets_the_leads_status(org: FakeSalesforce, salesforce: SalesforceCrm) -> None:
    # Given an open Lead for the customer
    # When an outbound call's disposition is logged
    record = salesforce.log_disposition(Disposition(unique("conv"), CUSTOMER, "not_interested"), crm_call())
    # Then the Lead's Status is the standard picklist value for it
    lead = _lead(org)
    assert lead["Status"] == "Closed - Not Converted"
    assert (record.kind, record.object_id, record.extra) == ("lead", lead["Id"], {"status": "Closed - Not Converted"})


def test_a_lead_status_map_in_the_secret_overrides_the_standard_values(org: FakeSalesforce, moto_endpoint: str) -> None:
    # Given an org with its own Lead Status values, and the mapping in the secret as a JSON object
    with FakeSalesforce(lead_statuses=("New", "Nurturing", "Meeting Set", "Disqualified")) as custom:
        custom.add_lead(phone=CUSTOMER_PHONE, Status="New")
        secret = create_secret(
            unique("aftercall/crm"), _secret_value(custom, lead_status_map={"meeting_booked": "Meeting Set"})
        )
        # When a meeting_booked disposition is logged
        _adapter(secret).log_disposition(Disposition(unique("conv"), CUSTOMER, "meeting_booked"), crm_call())
        # Then the Lead carries the org's own value
        assert custom.records("Lead")[0]["Status"] == "Meeting Set"


def test_a_status_the_org_does_not_have_is_a_configuration_error_naming_the_fix(moto_endpoint: str) -> None:
    # Given an org whose restricted Lead Status picklist lacks the standard values
    with FakeSalesforce(lead_statuses=("New", "Disqualified")) as custom:
        custom.add_lead(phone=CUSTOMER_PHONE, Status="New")
        secret = create_secret(unique("aftercall/crm"), _secret_value(custom))
        # When a disposition is logged
        # Then it says which value was refused and where to map it
        with pytest.raises(ConfigurationError, match=r"refused Lead Status 'Working - Contacted'.*lead_status_map"):
            _adapter(secret).log_disposition(Disposition(unique("conv"), CUSTOMER, "interested"), crm_call())
        assert custom.records("Lead")[0]["Status"] == "New"


# --- never twice -------------------------------------------------------------------------------


def test_logging_the_same_summary_again_updates_the_one_task(org: FakeSalesforce, salesforce: SalesforceCrm) -> None:
    # Given a summary already logged (a Lambda retry, or a replay days later)
    note = _note()
    first = salesforce.log_summary(note, crm_call())
    # When it is logged again, recovering
    again = salesforce.log_summary(note, crm_call(recovering=True))
    # Then the upsert updated the same Task (200, created: false): still exactly one
    assert again.object_id == first.object_id
    assert len(org.tasks_for(note.conversation_id)) == 1
    assert _statuses(org, "PATCH", TASKS) == [201, 200]


def test_a_500_after_the_upsert_was_applied_is_retried_into_the_same_task(
    org: FakeSalesforce, salesforce: SalesforceCrm
) -> None:
    # Given the org applies the first Task upsert but answers 500 (the ambiguous case)
    org.add_fault("after_commit_status", method="PATCH", path=TASKS, status=500, times=1)
    note = _note()
    # When the summary is logged
    record = salesforce.log_summary(note, crm_call())
    # Then the upsert was simply sent again and updated the Task it had made: exactly one
    (task,) = org.tasks_for(note.conversation_id)
    assert record.object_id == task["Id"]
    assert _statuses(org, "PATCH", TASKS) == [500, 200]


def test_a_reset_during_the_case_upsert_leaves_one_case(org: FakeSalesforce, salesforce: SalesforceCrm) -> None:
    # Given the connection is reset while the Case upsert is in flight
    org.add_fault("reset", method="PATCH", path=CASES, times=1)
    ticket = _ticket()
    # When the ticket is opened
    salesforce.open_ticket(ticket, crm_call())
    # Then exactly one Case exists
    assert len(org.cases_for(ticket.conversation_id)) == 1
    assert _statuses(org, "PATCH", CASES) == [None, 201]


def test_a_timed_out_upsert_is_retried_into_one_case(org: FakeSalesforce, secret_id: str) -> None:
    # Given the first Case upsert never gets an answer
    org.add_fault("hang", method="PATCH", path=CASES, then="never", times=1)
    salesforce = _adapter(secret_id, read_timeout=0.3)
    ticket = _ticket()
    # When the ticket is opened
    salesforce.open_ticket(ticket, crm_call())
    # Then the client gave up on it, sent the upsert again, and there is one Case
    assert len(org.cases_for(ticket.conversation_id)) == 1
    assert _statuses(org, "PATCH", CASES) == [None, 201]


def test_an_api_version_before_46_updates_with_204_and_the_id_is_read_back(
    org: FakeSalesforce, moto_endpoint: str
) -> None:
    # Given an adapter configured for API v45.0, whose upsert answers an update with 204 and no body
    secret = create_secret(unique("aftercall/crm"), _secret_value(org, api_version="45.0"))
    salesforce = _adapter(secret)
    note = _note()
    created = salesforce.log_summary(note, crm_call())
    # When the same summary is upserted again
    again = salesforce.log_summary(note, crm_call(recovering=True))
    # Then the Id was read back by external id, and there is one Task
    assert again.object_id == created.object_id
    tasks = f"/services/data/v45.0/sobjects/Task/{EXT_ID}/"
    assert _statuses(org, "PATCH", tasks) == [201, 204]
    assert _statuses(org, "GET", tasks) == [200]
    assert len(org.tasks_for(note.conversation_id)) == 1


# --- rate limits ---------------------------------------------------------------------------------


def test_a_403_request_limit_exceeded_is_treated_as_a_rate_limit(
    org: FakeSalesforce, salesforce: SalesforceCrm
) -> None:
    # Given the org answers the first query 403 REQUEST_LIMIT_EXCEEDED (no Retry-After)
    org.add_fault("rate_limit", path=SEARCH, retry_after=None, times=1)
    note = _note()
    # When the summary is logged
    salesforce.log_summary(note, crm_call())
    # Then the query was retried after a backoff rather than failing as a refusal
    assert _statuses(org, "GET", SEARCH) == [403, 200]
    (limited, _) = org.requests_to("GET", SEARCH)
    assert limited.fault == "rate_limit"
    assert len(org.tasks_for(note.conversation_id)) == 1


def test_a_429_retry_after_is_waited_out(org: FakeSalesforce, salesforce: SalesforceCrm) -> None:
    # Given the org answers the Task upsert 429 once, asking for one second
    org.add_fault("rate_limit", method="PATCH", path=TASKS, status=429, retry_after="1", times=1)
    note = _note()
    # When the summary is logged
    salesforce.log_summary(note, crm_call())
    # Then the next upsert reached the org no sooner than Retry-After after the 429 was sent
    limited, retried = org.requests_to("PATCH", TASKS)
    assert (limited.status, retried.status) == (429, 201)
    assert limited.answered is not None
    assert retried.received - limited.answered >= 1.0


def test_a_request_limit_that_outlasts_the_invocation_gives_up_for_a_retry(
    org: FakeSalesforce, salesforce: SalesforceCrm
) -> None:
    # Given every query is refused for the API limit
    org.add_fault("rate_limit", path=SEARCH, retry_after="60")
    # When the summary is logged with two seconds left
    # Then it gives up instead of sleeping past the deadline; nothing was written
    with pytest.raises(CrmUnavailableError, match=r"rate limited \(403\).*would outlast this invocation"):
        salesforce.log_summary(_note(), crm_call(2.0))
    assert org.records("Task") == []


# --- credentials -----------------------------------------------------------------------------


def test_an_expired_session_gets_a_new_token_and_the_call_succeeds(
    org: FakeSalesforce, salesforce: SalesforceCrm
) -> None:
    # Given a warm adapter holding a token
    salesforce.log_summary(_note(), crm_call())
    # When the org ends the session and the next summary is logged
    org.revoke_tokens()
    note = _note()
    salesforce.log_summary(note, crm_call())
    # Then the stale token got one 401, a new token was fetched, and the Task was written
    assert len(org.tasks_for(note.conversation_id)) == 1
    assert org.token_requests == 2
    assert 401 in _statuses(org, "GET", SEARCH) + _statuses(org, "PATCH", TASKS)


def test_a_rotated_client_secret_is_read_again_from_the_secret(
    org: FakeSalesforce, salesforce: SalesforceCrm, secret_id: str
) -> None:
    # Given a warm adapter that has read (and cached) the secret and a token
    salesforce.log_summary(_note(), crm_call())
    # When the consumer secret is rotated in Salesforce (ending sessions) and stored in the secret
    org.rotate_client_secret("sf-secret-rotated")
    put_secret(secret_id, _secret_value(org))
    note = _note()
    salesforce.log_summary(note, crm_call())
    # Then the 401 led to a re-read of the secret and a token with the new client secret
    assert len(org.tasks_for(note.conversation_id)) == 1
    token_statuses = _statuses(org, "POST", TOKEN)
    assert token_statuses == [200, 200]


def test_a_client_secret_nobody_stored_is_a_credentials_error(org: FakeSalesforce, salesforce: SalesforceCrm) -> None:
    # Given the consumer secret was rotated in Salesforce but the secret was not updated
    org.rotate_client_secret("sf-secret-nobody-stored")
    # When the summary is logged
    # Then, after one re-read of the secret, a specific credentials error names OAuth's reason
    with pytest.raises(CrmCredentialsError, match=r"refused the client credentials.*invalid_client"):
        salesforce.log_summary(_note(), crm_call())
    assert _statuses(org, "POST", TOKEN) == [400, 400]
    assert org.records("Task") == []


def test_the_client_secret_never_reaches_the_request_log(org: FakeSalesforce, salesforce: SalesforceCrm) -> None:
    # Given a token request was made
    salesforce.log_summary(_note(), crm_call())
    # When the fake's request log is read
    (token_request,) = org.requests_to("POST", TOKEN)
    # Then the form is there with the secret redacted (the fake holds itself to the same rule)
    assert token_request.body["grant_type"] == "client_credentials"
    assert token_request.body["client_secret"] == "<redacted>"


def test_a_secret_without_instance_url_names_the_missing_key(org: FakeSalesforce, moto_endpoint: str) -> None:
    # Given a secret with the client credentials but no instance URL
    secret = create_secret(unique("aftercall/crm"), {"client_id": "a", "client_secret": "b"})
    # When the adapter is used
    # Then the error names the missing key; Salesforce saw nothing
    with pytest.raises(SecretError, match="lacks 'instance_url'"):
        _adapter(secret).log_summary(_note(), crm_call())
    assert org.requests == []


def test_an_external_id_field_that_does_not_exist_is_a_configuration_error(
    org: FakeSalesforce, moto_endpoint: str
) -> None:
    # Given a secret naming a Task external-id field the org does not have
    secret = create_secret(unique("aftercall/crm"), _secret_value(org, task_external_id_field="Call_Ref__c"))
    # When the summary is logged
    # Then the error names the object and field and points at the setup steps
    with pytest.raises(ConfigurationError, match=r"Task has no external-id field 'Call_Ref__c'.*docs/crm.md"):
        _adapter(secret).log_summary(_note(), crm_call())


def test_a_field_name_that_is_not_a_custom_field_is_refused_before_any_call(
    org: FakeSalesforce, moto_endpoint: str
) -> None:
    # Given a secret whose field name would change the URL path
    secret = create_secret(unique("aftercall/crm"), _secret_value(org, case_external_id_field="Id/../../x"))
    # When a ticket is opened
    # Then it is refused as configuration, naming the key
    with pytest.raises(ConfigurationError, match="case_external_id_field"):
        _adapter(secret).open_ticket(_ticket(), crm_call())
    assert org.requests == []


# --- contacts ------------------------------------------------------------------------------------


def test_an_unknown_caller_is_reported_with_the_phone_masked(org: FakeSalesforce, salesforce: SalesforceCrm) -> None:
    # Given a caller the org does not know
    raw = "+14155559876"
    # When the summary is logged
    with pytest.raises(UnknownContactError) as raised:
        salesforce.log_summary(_note(customer=Customer(phone=raw, email=None)), crm_call())
    # Then the error says so with the number masked, never in full, and nothing was written
    assert "no salesforce record with phone +141****9876" in str(raised.value)
    assert raw not in str(raised.value)
    assert org.records("Task") == []


def test_a_ticket_for_a_lead_only_customer_carries_their_details(
    org: FakeSalesforce, salesforce: SalesforceCrm
) -> None:
    # Given a prospect known only as a Lead (a Case cannot belong to a Lead)
    lead_id = org.add_lead(phone="+14155550777")
    # When a ticket is opened for them
    ticket = _ticket(customer=Customer(phone="+14155550777", email="lead@example.com"))
    record = salesforce.open_ticket(ticket, crm_call())
    # Then the Case carries the caller's phone and email as Web-to-Case does, and names the Lead
    (case,) = org.cases_for(ticket.conversation_id)
    assert (case["SuppliedPhone"], case["SuppliedEmail"], case.get("ContactId")) == (
        "+14155550777",
        "lead@example.com",
        None,
    )
    assert record.extra == {"lead_id": lead_id}


def test_a_converted_lead_gets_no_disposition(org: FakeSalesforce, salesforce: SalesforceCrm) -> None:
    # Given a customer whose only Lead was converted
    org.add_lead(phone="+14155550888", IsConverted=True)
    # When a disposition is logged
    # Then the caller is unknown: search returns only unconverted Leads (UnknownCallerPolicy park here)
    with pytest.raises(UnknownContactError, match="UnknownCallerPolicy is park"):
        salesforce.log_disposition(
            Disposition(unique("conv"), Customer("+14155550888", None), "interested"), crm_call()
        )


def test_a_phone_stored_in_the_us_display_format_is_found(org: FakeSalesforce, salesforce: SalesforceCrm) -> None:
    # Given a Contact whose phone was typed in Salesforce's UI, so stored as (415) 555-0199
    contact_id = org.add_contact(phone="(415) 555-0199")
    note = _note(customer=Customer(phone="+14155550199", email=None))
    # When the summary is logged for the E.164 number
    salesforce.log_summary(note, crm_call())
    # Then the Task is on that Contact
    (task,) = org.tasks_for(note.conversation_id)
    assert task["WhoId"] == contact_id


def test_an_email_with_a_quote_cannot_change_the_query(org: FakeSalesforce, salesforce: SalesforceCrm) -> None:
    # Given a customer whose email contains a quote, and another Contact an injection would reach
    contact_id = org.add_contact(email="o'brien@example.com")
    org.add_contact(email="someone.else@example.com")
    note = _note(customer=Customer(phone=None, email="o'brien@example.com"))
    # When the summary is logged
    salesforce.log_summary(note, crm_call())
    # Then the escaped literal matched exactly that Contact
    (task,) = org.tasks_for(note.conversation_id)
    assert task["WhoId"] == contact_id
    sosl = caller_search(note.customer, ("Contact",), "email")
    assert sosl is not None
    assert r'{"o\'brien@example.com"}' in sosl


def test_a_refused_lookup_does_not_echo_the_customers_details(org: FakeSalesforce, salesforce: SalesforceCrm) -> None:
    # Given Salesforce refuses the search quoting it, as it does for MALFORMED_SEARCH
    echo = f"\nFIND {{{CUSTOMER_EMAIL}}}\n^\nERROR at Row:1:Column:40\nunexpected token: {CUSTOMER_PHONE}"
    org.add_fault("status", path=SEARCH, status=400, body=[{"message": echo, "errorCode": "MALFORMED_SEARCH"}])
    # When the summary is logged
    with pytest.raises(CrmRequestError) as raised:
        salesforce.log_summary(_note(customer=Customer(CUSTOMER_PHONE, CUSTOMER_EMAIL)), crm_call())
    # Then the error keeps the code and drops the quoted phone and email
    assert str(raised.value) == "salesforce refused the caller search: HTTP 400"


def test_phone_forms_are_the_digits_a_number_is_typed_with() -> None:
    # Given a US number and a UK number
    # When the forms Salesforce's phone search is asked for are made
    # Then each has its national number, with country code, and the UK one as dialled at home
    assert phone_forms("+14155550123") == ["4155550123", "14155550123"]
    assert phone_forms("+442071838750") == ["2071838750", "442071838750", "02071838750"]


# --- HTTPS only ----------------------------------------------------------------------------------


def test_an_instance_url_that_is_not_https_is_refused(org: FakeSalesforce, moto_endpoint: str) -> None:
    # Given a secret whose instance URL is plain HTTP to a remote host
    secret = create_secret(unique("aftercall/crm"), _secret_value(org, instance_url="http://example.my.salesforce.com"))
    # When the adapter is used
    # Then it refuses before any request
    with pytest.raises(ConfigurationError, match="outbound calls use HTTPS"):
        _adapter(secret).log_summary(_note(), crm_call())
    assert org.requests == []


# --- the fake itself -------------------------------------------------------------------------------


def test_the_fake_answers_in_salesforces_shapes(org: FakeSalesforce) -> None:
    # Given a token from the fake's token endpoint
    with requests.Session() as http:
        token = http.post(
            f"{org.url}/services/oauth2/token",
            data={"grant_type": "client_credentials", "client_id": org.client_id, "client_secret": org.client_secret},
        ).json()
        auth = {"Authorization": f"Bearer {token['access_token']}"}
        # When a query is malformed, a field unknown, the session missing, and an upsert made twice
        malformed = http.get(f"{org.url}{API}/query", params={"q": "SELECT Id FROM"}, headers=auth)
        unknown = http.get(f"{org.url}{API}/query", params={"q": "SELECT Nope__c FROM Lead"}, headers=auth)
        no_session = http.get(f"{org.url}{API}/query", params={"q": "SELECT Id FROM Lead"})
        first = http.patch(f"{org.url}{API}/sobjects/Case/{EXT_ID}/c-1", json={"Subject": "a"}, headers=auth)
        second = http.patch(f"{org.url}{API}/sobjects/Case/{EXT_ID}/c-1", json={"Subject": "b"}, headers=auth)
        bad_pick = http.patch(f"{org.url}{API}/sobjects/Case/{EXT_ID}/c-2", json={"Priority": "Urgent"}, headers=auth)
    # Then each answer has Salesforce's status and error shape
    assert token["token_type"] == "Bearer"
    assert token["instance_url"] == org.url
    assert (malformed.status_code, malformed.json()[0]["errorCode"]) == (400, "MALFORMED_QUERY")
    assert (unknown.status_code, unknown.json()[0]["errorCode"]) == (400, "INVALID_FIELD")
    assert (no_session.status_code, no_session.json()[0]["errorCode"]) == (401, "INVALID_SESSION_ID")
    assert (first.status_code, first.json()["created"]) == (201, True)
    assert (second.status_code, second.json()) == (
        200,
        {"id": first.json()["id"], "success": True, "errors": [], "created": False},
    )
    assert (bad_pick.status_code, bad_pick.json()[0]["errorCode"]) == (400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")
    (case,) = org.cases_for("c-1")
    assert case["Subject"] == "b"


def test_the_fakes_soql_honours_and_or_parentheses_order_and_limit(org: FakeSalesforce) -> None:
    # Given three Leads, one converted
    a = org.add_lead(phone="+14155550001", Company="A")
    b = org.add_lead(email="b@example.com", Company="B")
    org.add_lead(phone="+14155550001", IsConverted=True, Company="C")
    org.revoke_tokens()
    with requests.Session() as http:
        form = {"grant_type": "client_credentials", "client_id": org.client_id, "client_secret": org.client_secret}
        auth = {
            "Authorization": f"Bearer {http.post(f'{org.url}/services/oauth2/token', data=form).json()['access_token']}"
        }

        def ids(soql: str) -> list[str]:
            answer = http.get(f"{org.url}{API}/query", params={"q": soql}, headers=auth)
            assert answer.status_code == 200, answer.text
            return [r["Id"] for r in answer.json()["records"]]

        # When queries combine AND, OR, parentheses, ORDER BY and LIMIT
        both = ids(
            "SELECT Id FROM Lead WHERE IsConverted = false AND (Phone IN ('+14155550001') OR Email = 'B@EXAMPLE.COM') "
            "ORDER BY LastModifiedDate ASC"
        )
        newest = ids("SELECT Id FROM Lead WHERE IsConverted = false ORDER BY LastModifiedDate DESC LIMIT 1")
    # Then the converted Lead is excluded, case is ignored, and order and limit apply
    assert both == [a, b]
    assert newest == [b]


def test_the_fakes_request_limit_fault_has_salesforces_body(org: FakeSalesforce) -> None:
    # Given a rate-limit fault on the fake
    org.add_fault("rate_limit", retry_after=None, times=1)
    # When any request is made
    answer = requests.get(f"{org.url}{API}/query", params={"q": "SELECT Id FROM Lead"}, timeout=5)
    # Then it is 403 REQUEST_LIMIT_EXCEEDED, as Salesforce answers an exhausted API limit
    assert answer.status_code == 403
    assert answer.json() == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED", "fields": []}
    ]


# --- the whole handler ---------------------------------------------------------------------------------


def test_the_handler_writes_a_support_call_to_salesforce_once(stack: HandlerPeers, org: FakeSalesforce) -> None:
    # Given a stack configured for Salesforce (the runtime's own build_crm picks the adapter)
    secret = create_secret(unique("aftercall/crm"), _secret_value(org))
    runtime = EndHandlerRuntime(stack.settings(crm_provider="salesforce", crm_secret_id=secret, crm_base_url=None))
    event = support_call_ended()
    conversation_id = event["detail"]["conversation_id"]
    # When a support call is processed, and then emitted again
    report = runtime.handle(event, lambda_context(), end_function)
    again = runtime.handle(re_emitted(event), lambda_context(), end_function)
    # Then one Task and one Case exist for it, the report names them, and the duplicate wrote nothing
    (task,) = org.tasks_for(conversation_id)
    (case,) = org.cases_for(conversation_id)
    assert report["status"] == "processed"
    assert report["actions"]["crm_summary"]["result"]["object_id"] == task["Id"]
    assert report["actions"]["support_ticket"]["result"]["object_id"] == case["Id"]
    assert case["Subject"] == "Charged twice for the November invoice"
    assert again["duplicate"] is True
    assert _statuses(org, "PATCH", TASKS) == [201]
    assert stack.parked() == []


def test_the_handler_records_an_outbound_disposition_on_the_lead(stack: HandlerPeers, org: FakeSalesforce) -> None:
    # Given a stack configured for Salesforce and an outbound call whose prospect is interested
    secret = create_secret(unique("aftercall/crm"), _secret_value(org))
    runtime = EndHandlerRuntime(stack.settings(crm_provider="salesforce", crm_secret_id=secret, crm_base_url=None))
    # When it is processed
    report = runtime.handle(outbound_call_ended(), lambda_context(), end_function)
    # Then the Lead is being worked
    assert report["actions"]["disposition"]["status"] == "done"
    assert _lead(org)["Status"] == "Working - Contacted"
    assert json.dumps(report).count(CUSTOMER_PHONE) == 0  # the report carries no raw phone number
