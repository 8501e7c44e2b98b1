"""Every caller, every phone format, in Salesforce: the adapter finds callers with SOSL phone search
and upserts each new caller's Lead once, against the fake Salesforce (phones as typed, a search
index that lags writes by 15 minutes, required fields, 403 limits) over HTTP, with the caller lease
in DynamoDB (moto).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs

import pytest

from aftercall import aws
from aftercall.credentials import SecretCredentials
from aftercall.crm.base import CrmRecord, Customer, Disposition
from aftercall.crm.caller_lease import CallerLeases
from aftercall.crm.callers import NewCallers
from aftercall.crm.salesforce import SECRET_KEYS, SalesforceCrm
from aftercall_ops.fakes.salesforce import FakeSalesforce
from aftercall_ops.fakes.salesforce_org import DEFAULT_CALLER_ID_FIELD
from tests.support.crm import caller_note, crm_call, new_phone
from tests.support.stack import FAST_HTTP, create_secret, create_table, unique

API = "/services/data/v62.0"
SEARCH = f"{API}/search"
LEAD_UPSERT = f"{API}/sobjects/Lead/{DEFAULT_CALLER_ID_FIELD}/"


@pytest.fixture
def org() -> Iterator[FakeSalesforce]:
    """A fake org as inconvenient as production: its search index lags writes by 15 minutes."""
    with FakeSalesforce(client_id=unique("3MVG9"), client_secret=unique("sf-secret")) as fake:
        yield fake


@pytest.fixture
def secret_id(moto_endpoint: str, org: FakeSalesforce) -> Iterator[str]:
    value = {"client_id": org.client_id, "client_secret": org.client_secret, "instance_url": org.url}
    name = create_secret(unique("aftercall/crm"), value)
    yield name
    aws.client("secretsmanager").delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


@pytest.fixture
def table(moto_endpoint: str) -> str:
    return create_table(unique("aftercall-idempotency"))


def _environment(secret_id: str, table: str, policy: str = "create", **options: Any) -> SalesforceCrm:
    """One execution environment's adapter (its own warm cache), sharing the caller table."""
    new_callers = NewCallers("create" if policy == "create" else "park", CallerLeases(table))
    credentials = SecretCredentials(secret_id, SECRET_KEYS, 300)
    return SalesforceCrm(credentials, allow_loopback_http=True, new_callers=new_callers, **{**FAST_HTTP, **options})


def _leads_with(org: FakeSalesforce, phone: str) -> list[dict[str, Any]]:
    return [lead for lead in org.records("Lead") if lead.get("Phone") == phone]


# --- phones as people typed them ---------------------------------------------------------------


@pytest.mark.parametrize("typed", ["(415) 555-0134", "+1 415-555-0134", "415.555.0134", "+14155550134"])
def test_a_caller_is_found_whatever_format_their_number_was_typed_in(
    org: FakeSalesforce, secret_id: str, table: str, typed: str
) -> None:
    # Given a Contact whose number someone typed as people do
    contact_id = org.add_contact(phone=typed)
    # When a call from +14155550134 is logged
    record = _environment(secret_id, table).log_summary(caller_note(Customer("+14155550134", None)), crm_call())
    # Then the Task is on that Contact and no Lead was created
    assert record.extra["who_id"] == contact_id
    assert org.records("Lead") == []
    # and the search asked for the digit forms, as Salesforce's phone search matches them
    (search,) = org.requests_to("GET", SEARCH)
    assert parse_qs(search.query)["q"][0].startswith('FIND {"4155550134" OR "14155550134"} IN PHONE FIELDS')


def test_a_uk_number_typed_as_dialled_at_home_is_found(org: FakeSalesforce, secret_id: str, table: str) -> None:
    # Given a Contact whose UK number was typed with its trunk 0
    contact_id = org.add_contact(phone="020 7946 0958")
    # When a call from +442079460958 is logged
    record = _environment(secret_id, table).log_summary(caller_note(Customer("+442079460958", None)), crm_call())
    # Then it is on that Contact
    assert record.extra["who_id"] == contact_id


def test_several_matches_choose_the_oldest_contact_and_create_nothing(
    org: FakeSalesforce, secret_id: str, table: str
) -> None:
    # Given a Lead, then a Contact, then a newer Contact, all with the caller's number
    org.add_lead(phone="(415) 555-0188")
    contact = org.add_contact(phone="415.555.0188")
    org.add_contact(phone="+14155550188")
    # When calls from +14155550188 are logged from two environments
    first = _environment(secret_id, table).log_summary(caller_note(Customer("+14155550188", None)), crm_call())
    second = _environment(secret_id, table).log_summary(caller_note(Customer("+14155550188", None)), crm_call())
    # Then both Tasks are on the oldest Contact, and nothing was created
    assert first.extra["who_id"] == second.extra["who_id"] == contact
    assert org.requests_to("PATCH", LEAD_UPSERT) == []


# --- new callers ---------------------------------------------------------------------------------


def test_a_new_caller_becomes_one_lead_upserted_on_the_caller_id(
    org: FakeSalesforce, secret_id: str, table: str
) -> None:
    # Given a caller the org does not know, with the name and email the agent collected
    phone = new_phone("628")
    customer = Customer(phone, "ada@example.com", "Ada", "Lovelace")
    note = caller_note(customer)
    # When the summary and a disposition are logged under UnknownCallerPolicy=create
    salesforce = _environment(secret_id, table)
    record = salesforce.log_summary(note, crm_call())
    disposition = salesforce.log_disposition(Disposition(note.conversation_id, customer, "interested"), crm_call())
    # Then one Lead exists for them with what the state held, upserted on a caller id without the
    # raw number, and the Task and the Lead Status are on it
    (lead,) = _leads_with(org, phone)
    assert (lead["FirstName"], lead["LastName"], lead["Email"]) == ("Ada", "Lovelace", "ada@example.com")
    assert lead["Company"] == "[not provided]"
    assert lead[DEFAULT_CALLER_ID_FIELD].startswith("aftercall-caller-")
    assert phone.lstrip("+") not in lead[DEFAULT_CALLER_ID_FIELD]
    assert record.extra["who_id"] == disposition.object_id == lead["Id"]
    assert org.record("Lead", lead["Id"])["Status"] == "Working - Contacted"  # type: ignore[index]


def test_a_new_caller_can_become_a_contact(org: FakeSalesforce, secret_id: str, table: str) -> None:
    # Given NewCallerObject=Contact and a caller the org does not know
    phone = new_phone("628")
    salesforce = _environment(secret_id, table, new_caller_object="Contact")
    # When the summary is logged
    record = salesforce.log_summary(caller_note(Customer(phone, None)), crm_call())
    # Then one Contact was made for them (no Lead), named as unknown
    (contact,) = [c for c in org.records("Contact") if c.get("Phone") == phone]
    assert (contact["LastName"], record.extra["who_id"]) == ("Unknown caller", contact["Id"])
    assert org.records("Lead") == []


def test_two_conversations_of_one_new_caller_at_once_make_one_lead(
    org: FakeSalesforce, secret_id: str, table: str
) -> None:
    # Given a new caller with two conversations processed at the same moment in two environments
    customer = Customer(new_phone("628"), None)
    notes = [caller_note(customer), caller_note(customer)]
    environments = [_environment(secret_id, table), _environment(secret_id, table)]
    barrier = threading.Barrier(2)

    def run(index: int) -> CrmRecord:
        barrier.wait()
        return environments[index].log_summary(notes[index], crm_call())

    # When both run
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, range(2)))
    # Then one Lead was made and both Tasks are on it
    (lead,) = _leads_with(org, customer.phone or "")
    assert [r.extra["who_id"] for r in results] == [lead["Id"], lead["Id"]]


def test_a_lost_upsert_answer_is_sent_again_and_updates_the_same_lead(
    org: FakeSalesforce, secret_id: str, table: str
) -> None:
    # Given Salesforce applies the Lead upsert but its answer comes after the read timeout
    customer = Customer(new_phone("628"), None)
    org.add_fault("hang", method="PATCH", path=LEAD_UPSERT, seconds=0.8, times=1)
    # When the summary is logged
    record = _environment(secret_id, table, read_timeout=0.5).log_summary(caller_note(customer), crm_call())
    # Then the upsert was sent again on the same caller id and updated that one Lead
    (lead,) = _leads_with(org, customer.phone or "")
    assert record.extra["who_id"] == lead["Id"]
    assert len(org.requests_to("PATCH", LEAD_UPSERT)) == 2


def test_a_500_after_the_upsert_plus_index_lag_makes_no_second_lead(
    org: FakeSalesforce, secret_id: str, table: str
) -> None:
    # Given Salesforce creates the Lead but answers 500, and its search will not show it for 15 minutes
    customer = Customer(new_phone("628"), None)
    org.add_fault("after_commit_status", method="PATCH", path=LEAD_UPSERT, status=500, times=1)
    # When the summary is logged, and later a second conversation of the caller is processed in an
    # environment that does not share the caller table (the lease cannot help it)
    first = _environment(secret_id, table).log_summary(caller_note(customer), crm_call())
    second = _environment(secret_id, create_table(unique("other-table"))).log_summary(caller_note(customer), crm_call())
    # Then the search found nothing both times, and the upserts on the caller id updated one Lead
    (lead,) = _leads_with(org, customer.phone or "")
    assert first.extra["who_id"] == second.extra["who_id"] == lead["Id"]
    assert [r.status for r in org.requests_to("PATCH", LEAD_UPSERT)] == [500, 200, 200]
