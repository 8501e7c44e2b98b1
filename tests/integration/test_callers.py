"""Every caller, every phone format: the HubSpot adapter finds callers as HubSpot stores them and
creates each new caller's contact once, against the strict fake HubSpot (phones as typed, ~2 s
index lag, 4 searches/s, 409 on a duplicate email) and the caller lease in DynamoDB (moto).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from aftercall.conversation import Conversation
from aftercall.crm.base import CrmRecord, Customer
from aftercall.crm.caller_lease import CallerLeases, lease_key
from aftercall.crm.callers import NewCallers
from aftercall.crm.hubspot import HubSpotCrm
from aftercall.crm.search_slots import SharedSlots
from aftercall.errors import CrmUnavailableError, UnknownContactError
from aftercall_ops.fakes.hubspot import SEARCH_RATE_LIMIT_BODY
from tests.support.crm import caller_note, crm_call, new_phone
from tests.support.events import CUSTOMER_PHONE, conversation_ended
from tests.support.lambda_context import lambda_context
from tests.support.peers import NotificationsTopic
from tests.support.stack import HandlerPeers, unique

CONTACTS = "/crm/v3/objects/contacts"
CONTACT_CREATE = "/crm/v3/objects/contacts$"
CONTACT_SEARCH = "/crm/v3/objects/contacts/search"
#: The template's CrmSearchRateLimitPerSecond default.
SEARCH_PACE = 3.0


#: HubSpot's search lag, shortened in the fake and in the adapter alike to keep these tests quick.
LAG = 0.5


@pytest.fixture(autouse=True)
def _short_index_lag(stack: HandlerPeers) -> None:
    stack.crm.index_lag_seconds = LAG


def _environment(stack: HandlerPeers, policy: str = "create", **http: Any) -> HubSpotCrm:
    """One execution environment's adapter (its own warm cache), sharing the stack's caller table."""
    new_callers = NewCallers("create" if policy == "create" else "park", CallerLeases(stack.table))
    return stack.hubspot(new_callers=new_callers, search_lag_seconds=LAG, **http)


def _contacts_with(stack: HandlerPeers, national: str) -> list[dict[str, Any]]:
    return [
        c
        for c in stack.crm.contacts
        if c["properties"].get("hs_searchable_calculated_phone_number") == national
        or c["properties"].get("hs_searchable_calculated_mobile_number") == national
    ]


# --- phones as people typed them ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "field"),
    [
        ("(415) 555-0134", "phone"),
        ("+1 415-555-0134", "phone"),
        ("415.555.0134", "phone"),
        ("+1 (415) 555 0134", "mobilephone"),
    ],
)
def test_a_caller_is_found_whatever_format_their_number_was_typed_in(
    stack: HandlerPeers, typed: str, field: str
) -> None:
    # Given a contact whose number someone typed as people do (no phone validation in the portal)
    contact_id = stack.crm.add_contact(properties={field: typed, "firstname": "Typed"})
    hubspot = _environment(stack, "park")
    # When a call from +14155550134 is logged
    record = hubspot.log_summary(caller_note(Customer("+14155550134", None)), crm_call())
    # Then the note is on that contact: HubSpot's calculated digits-only property matched
    assert record.extra["contact_id"] == contact_id
    (search,) = stack.crm.requests_to("POST", CONTACT_SEARCH)
    values = {f["value"] for g in search.body["filterGroups"] for f in g["filters"]}
    assert values == {"4155550134"}


def test_a_number_without_country_code_is_read_with_the_default_region(stack: HandlerPeers) -> None:
    # Given a contact typed with spaces, and an event whose caller number has no country code
    contact_id = stack.crm.add_contact(properties={"phone": "+1 415 555 0177"})
    event = conversation_ended(caller="(415) 555-0177")
    # When the runtime (DefaultPhoneRegion US) processes it
    report = stack.runtime(default_phone_region="US").handle(event, lambda_context(), _summary_only)
    # Then the caller was matched to that contact
    assert report["actions"]["crm_summary"]["result"]["contact_id"] == contact_id


def _summary_only(conv: Any) -> None:
    conv.actions.log_summary({"topic": "phone formats"})


def test_several_matches_choose_the_oldest_with_the_same_country_code_and_create_nothing(
    stack: HandlerPeers,
) -> None:
    # Given two contacts with the caller's national number: a UK one first, then the US one, then a
    # newer US duplicate
    stack.crm.add_contact(properties={"phone": "+44 415 555 0188"})
    us = stack.crm.add_contact(properties={"phone": "(415) 555-0188"})
    stack.crm.add_contact(properties={"mobilephone": "+14155550188"})
    hubspot = _environment(stack)
    # When a call from +14155550188 is logged, twice from two environments
    first = hubspot.log_summary(caller_note(Customer("+14155550188", None)), crm_call())
    second = _environment(stack).log_summary(caller_note(Customer("+14155550188", None)), crm_call())
    # Then both notes went on the oldest US contact, and no contact was created
    assert first.extra["contact_id"] == second.extra["contact_id"] == us
    assert stack.crm.requests_to("POST", CONTACT_CREATE) == []


# --- new callers ---------------------------------------------------------------------------------


def test_a_new_caller_gets_one_lead_contact_and_the_note_on_it(stack: HandlerPeers) -> None:
    # Given a caller HubSpot does not know, with a name and an email the agent collected
    phone = new_phone()
    email = f"{unique('new')}@example.com"
    customer = Customer(phone, email, "Ada", "Lovelace")
    # When the summary is logged under UnknownCallerPolicy=create
    record = _environment(stack).log_summary(caller_note(customer), crm_call())
    # Then one contact exists for them, a new lead with what the state held, and the note is on it
    (contact,) = [c for c in stack.crm.contacts if c["properties"].get("email") == email]
    props = contact["properties"]
    assert (props["phone"], props["firstname"], props["lastname"]) == (phone, "Ada", "Lovelace")
    assert (props["lifecyclestage"], props["hs_lead_status"]) == ("lead", "NEW")
    assert record.extra["contact_id"] == contact["id"]


def test_park_leaves_a_new_caller_unknown_and_creates_nothing(stack: HandlerPeers) -> None:
    # Given UnknownCallerPolicy=park and a caller HubSpot does not know
    phone = new_phone()
    # When the summary is logged
    with pytest.raises(UnknownContactError, match=r"UnknownCallerPolicy is park") as raised:
        _environment(stack, "park").log_summary(caller_note(Customer(phone, None)), crm_call())
    # Then nothing was created and the number is masked in the error
    assert phone not in str(raised.value)
    assert stack.crm.requests_to("POST", CONTACT_CREATE) == []


def test_two_conversations_of_one_new_caller_at_once_make_one_contact(stack: HandlerPeers) -> None:
    # Given a new caller with two conversations processed at the same moment in two environments
    # (each searches, finds nothing, and HubSpot's search would not show the other's contact at once)
    customer = Customer(new_phone(), None)
    national = customer.phone[2:] if customer.phone else ""
    notes = [caller_note(customer), caller_note(customer)]
    environments = [_environment(stack), _environment(stack)]
    barrier = threading.Barrier(2)

    def run(index: int) -> CrmRecord:
        barrier.wait()
        return environments[index].log_summary(notes[index], crm_call())

    # When both run
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, range(2)))
    # Then one contact was created and both notes are on it
    (contact,) = _contacts_with(stack, national)
    assert [r.extra["contact_id"] for r in results] == [contact["id"], contact["id"]]
    assert len(stack.crm.requests_to("POST", CONTACT_CREATE)) == 1
    # And the caller item names the conversation that created it, keyed without the raw number
    item = CallerLeases(stack.table).lookup("hubspot", customer.phone or "")
    assert item is not None
    assert item["status"] == "CREATED"
    assert item["created_by"] in {n.conversation_id for n in notes}
    assert (customer.phone or "") not in lease_key("hubspot", customer.phone or "")


def test_a_create_whose_answer_is_lost_is_found_by_the_next_attempt_not_made_again(stack: HandlerPeers) -> None:
    # Given HubSpot applies the contact create but its answer never arrives within the read timeout,
    # and the first attempt has too little time to wait for it to show in search
    customer = Customer(new_phone(), None)
    national = customer.phone[2:] if customer.phone else ""
    stack.crm.add_fault("hang", method="POST", path=CONTACT_CREATE, seconds=0.8, times=1)
    first = _environment(stack, read_timeout=0.5)
    with pytest.raises(CrmUnavailableError, match="leaving it for a retry"):
        first.log_summary(caller_note(customer), crm_call(2.0))
    # When another conversation of the caller is processed in another environment
    record = _environment(stack, read_timeout=0.5).log_summary(caller_note(customer), crm_call(30.0))
    # Then it waited for the first create to settle and show, and used that contact: one contact
    (contact,) = _contacts_with(stack, national)
    assert record.extra["contact_id"] == contact["id"]
    assert len(stack.crm.requests_to("POST", CONTACT_CREATE)) == 1


def test_a_500_after_the_contact_create_plus_index_lag_makes_no_second_contact(stack: HandlerPeers) -> None:
    # Given HubSpot creates the contact but answers 500, and shows it in search only a moment later
    customer = Customer(new_phone(), None)
    national = customer.phone[2:] if customer.phone else ""
    stack.crm.add_fault("after_commit_status", method="POST", path=CONTACT_CREATE, status=500, times=1)
    # When the summary is logged
    record = _environment(stack).log_summary(caller_note(customer), crm_call())
    # Then the adapter waited out the index lag, found the contact and created no second one
    (contact,) = _contacts_with(stack, national)
    assert record.extra["contact_id"] == contact["id"]
    assert [r.status for r in stack.crm.requests_to("POST", CONTACT_CREATE)] == [500]


def test_hubspots_409_on_an_existing_email_gives_that_contact(stack: HandlerPeers) -> None:
    # Given a contact with the caller's email created a moment ago (not yet in search)
    email = f"{unique('lag')}@example.com"
    existing = stack.hubspot().http.request(
        "POST", CONTACTS, crm_call(), json={"properties": {"email": email}}, safe_to_retry=False
    )["id"]
    # When a chat from that email (no phone) is logged in another environment
    record = _environment(stack).log_summary(caller_note(Customer(None, email)), crm_call())
    # Then the create was refused with 409 and the note went on the existing contact
    assert record.extra["contact_id"] == existing
    assert [r.status for r in stack.crm.requests_to("POST", CONTACT_CREATE)] == [201, 409]


# --- HubSpot's limits ------------------------------------------------------------------------------


def test_a_search_429_without_retry_after_waits_its_policys_second(stack: HandlerPeers) -> None:
    # Given HubSpot answers the contact search once with its SECONDLY 429 and no Retry-After
    stack.crm.add_fault("rate_limit", path=CONTACT_SEARCH, retry_after=None, body=SEARCH_RATE_LIMIT_BODY, times=1)
    # When a call from the seeded customer is logged
    _environment(stack, "park").log_summary(caller_note(Customer(CUSTOMER_PHONE, None)), crm_call())
    # Then the retried search came a second after the 429, not after a generic backoff
    limited, retried = stack.crm.requests_to("POST", CONTACT_SEARCH)
    assert (limited.status, retried.status) == (429, 200)
    assert limited.answered is not None
    assert retried.received - limited.answered >= 1.0


def test_a_burst_of_searches_from_two_environments_shares_hubspots_limit_without_429(stack: HandlerPeers) -> None:
    # Given 12 known callers and two environments that take their searches from the slots shared in
    # the idempotency table (3 per second, the template's default, under HubSpot's 4)
    phones = [f"+1628555{index:04d}" for index in range(12)]
    for phone in phones:
        stack.crm.add_contact(properties={"phone": phone})
    name = unique("hubspot-search")  # one token's budget: the same slots, each environment its own client
    environments = [
        _environment(stack, "park", search_limiter=SharedSlots(stack.table, name, SEARCH_PACE)) for _ in range(2)
    ]
    # When all their calls are logged at once, half in each environment
    with ThreadPoolExecutor(12) as pool:
        records = list(
            pool.map(
                lambda item: environments[item[0] % 2].log_summary(caller_note(Customer(item[1], None)), crm_call()),
                enumerate(phones),
            )
        )
    # Then every call found its contact, and no search got a 429
    assert len({r.extra["contact_id"] for r in records}) == 12
    statuses = [r.status for r in stack.crm.requests_to("POST", CONTACT_SEARCH)]
    assert statuses == [200] * 12


# --- through the runtime -----------------------------------------------------------------------------


@pytest.fixture
def topic(moto_endpoint: str) -> Iterator[NotificationsTopic]:
    made = NotificationsTopic.create()
    yield made
    made.delete()


def _summary_and_notify(conv: Conversation) -> None:
    conv.actions.log_summary({"topic": conv.state.get("last_topic", "unknown")})
    conv.actions.notify("Inbound call", {"Topic": conv.state.get("last_topic", "unknown")})


def test_a_new_callers_first_conversation_makes_a_flagged_lead_and_the_next_one_reuses_it(
    stack: HandlerPeers, topic: NotificationsTopic
) -> None:
    # Given the default UnknownCallerPolicy (create) and two calls from a number HubSpot does not
    # know, the first written nationally with the default region US
    phone = new_phone()
    first = conversation_ended(caller=f"({phone[2:5]}) {phone[5:8]}-{phone[8:]}", state={"last_topic": "pricing"})
    second = conversation_ended(caller=phone, state={"last_topic": "pricing again"})
    runtime = stack.runtime(notifications_topic_arn=topic.topic_arn, default_phone_region="US")
    # When both are processed, one after the other
    reports = [runtime.handle(event, lambda_context(), _summary_and_notify) for event in (first, second)]
    # Then both were processed and their notes are on one new lead contact
    assert [r["status"] for r in reports] == ["processed", "processed"]
    (contact,) = _contacts_with(stack, phone[2:])
    assert contact["properties"]["phone"] == phone
    assert contact["properties"]["lifecyclestage"] == "lead"
    assert {r["actions"]["crm_summary"]["result"]["contact_id"] for r in reports} == {contact["id"]}
    # And only the first conversation's notification says it is a new lead
    by_conversation = {m["MessageAttributes"]["conversation_id"]["Value"]: m for m in topic.received()}
    flagged = by_conversation[first["detail"]["conversation_id"]]
    plain = by_conversation[second["detail"]["conversation_id"]]
    assert flagged["Subject"] == "New lead: Inbound call"
    assert f"New lead: yes: hubspot record {contact['id']} created for this caller" in flagged["Message"]
    assert plain["Subject"] == "Inbound call"
    assert "New lead" not in plain["Message"]
