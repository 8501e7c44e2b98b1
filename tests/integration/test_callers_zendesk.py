"""Every caller, every phone format, in Zendesk: the adapter finds callers with Zendesk's phone
search and makes each new caller's end user once with create-or-update, against the fake Zendesk
(phones as typed, a search index that lags writes, per-minute limits) over HTTP, with the caller
lease in DynamoDB (moto).
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
from aftercall.crm.base import CrmRecord, Customer
from aftercall.crm.caller_lease import CallerLeases
from aftercall.crm.callers import NewCallers
from aftercall.crm.zendesk import SECRET_KEYS, ZendeskCrm
from aftercall_ops.fakes.zendesk import FakeZendesk
from tests.support.crm import caller_note, crm_call, new_phone
from tests.support.stack import FAST_HTTP, create_secret, create_table, unique

PHONE_SEARCH = "/api/v2/search"
CREATE_OR_UPDATE = "/api/v2/users/create_or_update"


@pytest.fixture
def zendesk_fake() -> Iterator[FakeZendesk]:
    """A fake account as inconvenient as production: search lags writes by a minute."""
    with FakeZendesk(email="bot@acme.example", api_token=unique("zd-token")) as fake:
        yield fake


@pytest.fixture
def secret_id(moto_endpoint: str, zendesk_fake: FakeZendesk) -> Iterator[str]:
    value = {"subdomain": "acme", "email": zendesk_fake.email, "api_token": zendesk_fake.api_token}
    name = create_secret(unique("aftercall/crm"), value)
    yield name
    aws.client("secretsmanager").delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


@pytest.fixture
def table(moto_endpoint: str) -> str:
    return create_table(unique("aftercall-idempotency"))


def _environment(fake: FakeZendesk, secret_id: str, table: str, **http: Any) -> ZendeskCrm:
    """One execution environment's adapter (its own warm cache), sharing the caller table."""
    credentials = SecretCredentials(secret_id, SECRET_KEYS, 300)
    new_callers = NewCallers("create", CallerLeases(table))
    return ZendeskCrm(credentials, fake.url, allow_loopback_http=True, new_callers=new_callers, **{**FAST_HTTP, **http})


def _users_with(fake: FakeZendesk, phone: str) -> list[dict[str, Any]]:
    return [user for user in fake.users if user.get("phone") == phone]


# --- phones as people typed them ---------------------------------------------------------------


@pytest.mark.parametrize("typed", ["+1 415.555.0134", "(415) 555-0134", "415 555 0134", "+14155550134"])
def test_a_caller_is_found_whatever_format_their_number_was_typed_in(
    zendesk_fake: FakeZendesk, secret_id: str, table: str, typed: str
) -> None:
    # Given an end user whose number someone typed as people do
    user_id = zendesk_fake.add_user(phone=typed)
    # When a call from +14155550134 is logged
    record = _environment(zendesk_fake, secret_id, table).log_summary(
        caller_note(Customer("+14155550134", None)), crm_call()
    )
    # Then the call ticket is requested by that user, found with Zendesk's any-format phone search
    assert record.extra["requester_id"] == str(user_id)
    (search,) = zendesk_fake.requests_to("GET", PHONE_SEARCH)
    assert parse_qs(search.query)["query"] == ["type:user role:end-user phone:*4155550134"]
    assert zendesk_fake.requests_to("POST", CREATE_OR_UPDATE) == []


def test_several_matches_choose_the_user_with_the_very_number(
    zendesk_fake: FakeZendesk, secret_id: str, table: str
) -> None:
    # Given a UK user whose number ends with the caller's digits, then the US caller
    zendesk_fake.add_user(phone="+44 415 555 0188")
    us = zendesk_fake.add_user(phone="(415) 555-0188")
    # When a call from +14155550188 is logged
    record = _environment(zendesk_fake, secret_id, table).log_summary(
        caller_note(Customer("+14155550188", None)), crm_call()
    )
    # Then the US user was chosen and no user was created
    assert record.extra["requester_id"] == str(us)
    assert zendesk_fake.requests_to("POST", CREATE_OR_UPDATE) == []


# --- new callers ---------------------------------------------------------------------------------


def test_a_new_caller_becomes_one_end_user_with_a_stable_external_id(
    zendesk_fake: FakeZendesk, secret_id: str, table: str
) -> None:
    # Given a caller Zendesk does not know, with a name the agent collected
    phone = new_phone("628")
    # When the summary is logged under UnknownCallerPolicy=create
    record = _environment(zendesk_fake, secret_id, table).log_summary(
        caller_note(Customer(phone, None, "Ada", "Lovelace")), crm_call()
    )
    # Then one end user exists for them, named, with an external id that is not the raw number,
    # and the call ticket is theirs
    (user,) = _users_with(zendesk_fake, phone)
    assert (user["name"], user["role"]) == ("Ada Lovelace", "end-user")
    assert user["external_id"].startswith("aftercall-caller-")
    assert phone.lstrip("+") not in user["external_id"]
    assert record.extra["requester_id"] == str(user["id"])


def test_two_conversations_of_one_new_caller_at_once_make_one_user(
    zendesk_fake: FakeZendesk, secret_id: str, table: str
) -> None:
    # Given a new caller with two conversations processed at the same moment in two environments
    customer = Customer(new_phone("628"), None)
    notes = [caller_note(customer), caller_note(customer)]
    environments = [_environment(zendesk_fake, secret_id, table) for _ in range(2)]
    barrier = threading.Barrier(2)

    def run(index: int) -> CrmRecord:
        barrier.wait()
        return environments[index].log_summary(notes[index], crm_call())

    # When both run
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, range(2)))
    # Then one user was made and both call tickets are theirs
    (user,) = _users_with(zendesk_fake, customer.phone or "")
    assert [r.extra["requester_id"] for r in results] == [str(user["id"])] * 2


def test_a_lost_create_answer_is_sent_again_and_matches_the_same_user(
    zendesk_fake: FakeZendesk, secret_id: str, table: str
) -> None:
    # Given Zendesk creates the user but its answer comes after the read timeout
    customer = Customer(new_phone("628"), None)
    zendesk_fake.add_fault("hang", method="POST", path=CREATE_OR_UPDATE, seconds=0.8, times=1)
    # When the summary is logged
    record = _environment(zendesk_fake, secret_id, table, read_timeout=0.5).log_summary(
        caller_note(customer), crm_call()
    )
    # Then create-or-update was sent again and matched that user on its external id: one user
    (user,) = _users_with(zendesk_fake, customer.phone or "")
    assert record.extra["requester_id"] == str(user["id"])
    assert len(zendesk_fake.requests_to("POST", CREATE_OR_UPDATE)) == 2


def test_a_500_after_the_create_plus_index_lag_makes_no_second_user(
    zendesk_fake: FakeZendesk, secret_id: str, table: str
) -> None:
    # Given Zendesk creates the user but answers 500, and its search will not show them for a minute
    customer = Customer(new_phone("628"), None)
    zendesk_fake.add_fault("after_commit_status", method="POST", path=CREATE_OR_UPDATE, status=500, times=1)
    # When the summary is logged, and a second conversation of the caller is processed in an
    # environment that does not share the caller table (the lease cannot help it)
    first = _environment(zendesk_fake, secret_id, table).log_summary(caller_note(customer), crm_call())
    other = create_table(unique("other-table"))
    second = _environment(zendesk_fake, secret_id, other).log_summary(caller_note(customer), crm_call())
    # Then the searches found nothing, and create-or-update matched the one user each time
    (user,) = _users_with(zendesk_fake, customer.phone or "")
    assert first.extra["requester_id"] == second.extra["requester_id"] == str(user["id"])
    assert [r.status for r in zendesk_fake.requests_to("POST", CREATE_OR_UPDATE)] == [500, 200, 200]


def test_a_new_caller_with_an_email_is_matched_on_it(zendesk_fake: FakeZendesk, secret_id: str, table: str) -> None:
    # Given a user with the caller's email made a moment ago (not in search yet), without a phone
    email = f"{unique('chat')}@example.com"
    created = _environment(zendesk_fake, secret_id, table).http.request(
        "POST", CREATE_OR_UPDATE, crm_call(), json={"user": {"name": "Chat user", "email": email}}, safe_to_retry=True
    )["user"]["id"]
    # When a call from a new number with that email is logged
    record = _environment(zendesk_fake, secret_id, table).log_summary(
        caller_note(Customer(new_phone("628"), email)), crm_call()
    )
    # Then create-or-update matched the user on the email: still one user with it
    assert record.extra["requester_id"] == str(created)
    assert len([u for u in zendesk_fake.users if u.get("email") == email]) == 1
