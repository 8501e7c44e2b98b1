"""The HubSpot adapter against the fake HubSpot over HTTP, its secret in Secrets Manager (moto).

Each test injects one real-world failure at the HTTP level and checks what the CRM ends up
holding (exactly one note, the right error), never how our functions were called.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from aftercall.crm.base import CrmCall, Customer, Disposition, SummaryNote, SupportTicket
from aftercall.crm.hubspot import HubSpotCrm, marker
from aftercall.deadline import Deadline
from aftercall.errors import (
    ConfigurationError,
    CrmCredentialsError,
    CrmRequestError,
    CrmUnavailableError,
    SecretError,
    UnknownContactError,
)
from tests.support.crm import crm_call
from tests.support.events import CUSTOMER_EMAIL, CUSTOMER_PHONE
from tests.support.stack import HandlerPeers, create_secret, unique

CUSTOMER = Customer(phone=CUSTOMER_PHONE, email=None)
NOTES = "/crm/v3/objects/notes"
NOTE_CREATE = "/crm/v3/objects/notes$"  # exact: not the search under it
CONTACT_SEARCH = "/crm/v3/objects/contacts/search"


def _note(conversation_id: str | None = None, customer: Customer = CUSTOMER) -> SummaryNote:
    return SummaryNote(
        conversation_id=conversation_id or unique("conv"),
        customer=customer,
        occurred_at=datetime(2026, 11, 25, 9, 14, 50, tzinfo=UTC),
        summary={"topic": "billing", "sentiment": "Negative", "resolution": "<unresolved>"},
    )


@pytest.fixture
def hubspot(stack: HandlerPeers) -> HubSpotCrm:
    return stack.hubspot()


def _statuses(stack: HandlerPeers, method: str, path: str) -> list[int | None]:
    return [r.status for r in stack.crm.requests_to(method, path)]


# --- the happy path ----------------------------------------------------------------------------


def test_a_summary_becomes_one_marked_note_on_the_contact(stack: HandlerPeers, hubspot: HubSpotCrm) -> None:
    # Given a customer known to the CRM by phone
    note = _note()
    # When the summary is logged
    record = hubspot.log_summary(note, crm_call())
    # Then exactly one note carries the conversation's marker, is linked to the contact, and
    # shows the summary fields (HTML-escaped)
    (stored,) = stack.notes_for(note.conversation_id)
    assert record.kind == "note"
    assert record.object_id == stored["id"]
    assert record.extra == {"contact_id": stack.contact_id}
    assert stored["associations"] == {"contacts": [stack.contact_id]}
    body = stored["properties"]["hs_note_body"]
    assert "<b>topic</b>: billing" in body
    assert "&lt;unresolved&gt;" in body
    assert marker(note.conversation_id) in body
    assert stored["properties"]["hs_timestamp"] == "2026-11-25T09:14:50+00:00"


def test_a_contact_is_found_by_email_when_there_is_no_phone(stack: HandlerPeers, hubspot: HubSpotCrm) -> None:
    # Given a chat customer known only by email
    note = _note(customer=Customer(phone=None, email=CUSTOMER_EMAIL))
    # When the summary is logged
    hubspot.log_summary(note, crm_call())
    # Then the note is on the contact with that email
    (stored,) = stack.notes_for(note.conversation_id)
    assert stored["associations"] == {"contacts": [stack.contact_id]}


def test_a_recovering_call_finds_the_note_an_earlier_attempt_made(stack: HandlerPeers) -> None:
    # Given a note already written for the conversation by an attempt that was then stopped at its
    # deadline (now), and HubSpot's search that shows new notes only ~2 s after they were written
    hubspot = stack.hubspot(read_timeout=0.5)
    note = _note()
    first = hubspot.log_summary(note, crm_call())
    stopped_at = time.time()
    # When the action runs again, told by the ledger that the earlier attempt may have left a write
    again = hubspot.log_summary(note, CrmCall(Deadline.after(30), recovering=True, unanswered_write_at=stopped_at))
    # Then it returns the same note and creates none
    assert again.object_id == first.object_id
    assert len(stack.notes_for(note.conversation_id)) == 1
    assert _statuses(stack, "POST", f"{NOTES}/search") == [200]
    assert _statuses(stack, "POST", NOTE_CREATE) == [201]


def test_the_contact_lookup_is_cached_across_calls(stack: HandlerPeers, hubspot: HubSpotCrm) -> None:
    # Given two conversations with the same customer
    # When both summaries are logged by one warm adapter
    hubspot.log_summary(_note(), crm_call())
    hubspot.log_summary(_note(), crm_call())
    # Then the contact was searched for once
    assert _statuses(stack, "POST", CONTACT_SEARCH) == [200]
    assert len(stack.crm.notes) == 2


def test_a_ticket_is_opened_once_with_its_marker(stack: HandlerPeers, hubspot: HubSpotCrm) -> None:
    # Given a support ticket request
    ticket = SupportTicket(unique("conv"), CUSTOMER, "Charged twice", "Two charges of 49.00", "HIGH")
    # When it is opened
    record = hubspot.open_ticket(ticket, crm_call())
    # Then one ticket exists with the subject, priority and marker, linked to the contact
    (stored,) = stack.tickets_for(ticket.conversation_id)
    assert record.object_id == stored["id"]
    assert stored["properties"]["subject"] == "Charged twice"
    assert stored["properties"]["hs_ticket_priority"] == "HIGH"
    assert stored["associations"] == {"contacts": [stack.contact_id]}


def test_a_disposition_sets_the_lead_status_and_a_503_on_patch_is_retried(
    stack: HandlerPeers, hubspot: HubSpotCrm
) -> None:
    # Given the CRM fails the first update with 503 (setting a property is safe to repeat)
    stack.crm.add_fault("status", method="PATCH", status=503, times=1)
    # When an outbound call's disposition is logged
    record = hubspot.log_disposition(Disposition(unique("conv"), CUSTOMER, "meeting_booked"), crm_call())
    # Then the contact's lead status is set after one retry
    contact = stack.crm.contact(stack.contact_id)
    assert contact is not None
    assert contact["properties"]["hs_lead_status"] == "OPEN_DEAL"
    assert record.extra == {"hs_lead_status": "OPEN_DEAL"}
    assert _statuses(stack, "PATCH", "/crm/v3/objects/contacts/") == [503, 200]


# --- ambiguous creates -------------------------------------------------------------------------


def test_a_500_before_the_write_then_success_makes_one_note(stack: HandlerPeers, hubspot: HubSpotCrm) -> None:
    # Given the CRM answers the first note create with 500 without writing anything
    stack.crm.add_fault("status", method="POST", path=NOTE_CREATE, status=500, times=1)
    note = _note()
    # When the summary is logged
    hubspot.log_summary(note, crm_call())
    # Then the adapter looked before creating again, found nothing, created once: one note
    assert len(stack.notes_for(note.conversation_id)) == 1
    assert [(r.method, r.path, r.status) for r in stack.crm.requests_to("POST", NOTES)] == [
        ("POST", NOTES, 500),
        ("POST", f"{NOTES}/search", 200),
        ("POST", NOTES, 201),
    ]


def test_a_500_after_the_write_makes_no_second_note(stack: HandlerPeers, hubspot: HubSpotCrm) -> None:
    # Given the CRM applies the first note create but answers 500 (the ambiguous case)
    stack.crm.add_fault("after_commit_status", method="POST", path=NOTE_CREATE, status=500, times=1)
    note = _note()
    # When the summary is logged
    record = hubspot.log_summary(note, crm_call())
    # Then the adapter's search found the note it made: still exactly one, and it is the result
    (stored,) = stack.notes_for(note.conversation_id)
    assert record.object_id == stored["id"]
    assert _statuses(stack, "POST", NOTE_CREATE) == [500]  # no second create
    assert _statuses(stack, "POST", f"{NOTES}/search") == [200]


def test_a_connection_reset_during_a_create_makes_one_note(stack: HandlerPeers, hubspot: HubSpotCrm) -> None:
    # Given the connection is reset while the first note create is in flight
    stack.crm.add_fault("reset", method="POST", path=NOTE_CREATE, times=1)
    note = _note()
    # When the summary is logged
    hubspot.log_summary(note, crm_call())
    # Then exactly one note exists
    assert len(stack.notes_for(note.conversation_id)) == 1


def test_a_create_that_never_answers_gives_up_without_writing(stack: HandlerPeers) -> None:
    # Given a CRM that takes note creates and never answers them
    stack.crm.add_fault("hang", method="POST", path=NOTE_CREATE, then="never")
    hubspot = stack.hubspot(read_timeout=0.2)
    note = _note()
    # When the summary is logged
    # Then it fails as unavailable after a bounded number of creates, each checked by a search
    with pytest.raises(CrmUnavailableError, match="creating a note kept failing after 3 attempts"):
        hubspot.log_summary(note, crm_call())
    assert stack.crm.notes == []
    assert _statuses(stack, "POST", NOTE_CREATE) == [None, None, None]  # never answered
    assert _statuses(stack, "POST", f"{NOTES}/search") == [200, 200, 200]


def _until_the_crm_is_done(stack: HandlerPeers) -> None:
    """Wait (bounded) until the fake CRM has finished every request it received, late ones included."""
    for _ in range(200):
        if all(r.answered is not None for r in stack.crm.requests):
            return
        time.sleep(0.05)
    raise AssertionError("the fake CRM still holds a request after 10 s")


def test_a_create_applied_after_the_client_gave_up_is_found_not_repeated(stack: HandlerPeers) -> None:
    # Given HubSpot holds the note create past the client's read timeout, then applies it
    stack.crm.add_fault("hang", method="POST", path=NOTE_CREATE, seconds=0.8, times=1)
    hubspot = stack.hubspot(read_timeout=0.5)
    note = _note()
    # When the summary is logged
    record = hubspot.log_summary(note, crm_call())
    _until_the_crm_is_done(stack)
    # Then the adapter waited for the late write before looking, found it, and created nothing more
    (stored,) = stack.notes_for(note.conversation_id)
    assert record.object_id == stored["id"]
    hung, search = stack.crm.requests_to("POST", NOTES)
    assert (hung.path, search.path) == (NOTES, f"{NOTES}/search")
    assert hung.answered is not None
    assert search.received >= hung.answered


def test_a_retry_waits_for_a_create_an_earlier_attempt_left_unanswered(stack: HandlerPeers) -> None:
    # Given a first attempt whose note create got no answer, with too little time left to wait for it
    stack.crm.add_fault("hang", method="POST", path=NOTE_CREATE, seconds=0.8, times=1)
    hubspot = stack.hubspot(read_timeout=0.5)
    note = _note()
    first = crm_call(0.7)
    with pytest.raises(CrmUnavailableError, match=r"may still apply it .*waiting .* leaving it for a retry"):
        hubspot.log_summary(note, first)
    # When the action runs again at once, told when the unanswered create went out (the ledger's job)
    (sent_at,) = first.unanswered_writes
    again = CrmCall(deadline=Deadline.after(30), recovering=True, unanswered_write_at=sent_at)
    record = hubspot.log_summary(note, again)
    _until_the_crm_is_done(stack)
    # Then it waited for the late write, found it, and created none: one note
    (stored,) = stack.notes_for(note.conversation_id)
    assert record.object_id == stored["id"]
    assert _statuses(stack, "POST", NOTE_CREATE) == [201]  # the hung create, answered after the client left
    (hung,) = stack.crm.requests_to("POST", NOTE_CREATE)
    (search,) = stack.crm.requests_to("POST", f"{NOTES}/search")
    assert hung.answered is not None
    assert search.received >= hung.answered


def test_a_500_is_looked_after_only_once_the_search_can_show_it(stack: HandlerPeers) -> None:
    # Given the CRM answers the note create with 500 (written or not), and a search that shows a new
    # note only ~2 s after it was written
    stack.crm.add_fault("status", method="POST", path=NOTE_CREATE, status=500, times=1)
    hubspot = stack.hubspot()
    note = _note()
    call = crm_call()
    # When the summary is logged
    hubspot.log_summary(note, call)
    # Then the write was noted as in doubt for a later attempt, the search came only once HubSpot's
    # index lag had passed since the 500, and one note exists
    assert len(call.unanswered_writes) == 1
    failed, search, created = stack.crm.requests_to("POST", NOTES)
    assert (failed.status, search.path, created.status) == (500, f"{NOTES}/search", 201)
    assert failed.answered is not None
    assert search.received >= failed.answered + hubspot.search_lag_seconds
    assert len(stack.notes_for(note.conversation_id)) == 1


# --- rate limits ---------------------------------------------------------------------------------


def test_a_429_retry_after_is_waited_out_then_the_call_succeeds(stack: HandlerPeers, hubspot: HubSpotCrm) -> None:
    # Given the CRM rate-limits the contact search once, asking for one second
    stack.crm.add_fault("rate_limit", path=CONTACT_SEARCH, retry_after="1", times=1)
    note = _note()
    # When the summary is logged
    hubspot.log_summary(note, crm_call())
    # Then the next request reached the CRM no sooner than Retry-After after the 429 was sent
    limited, retried = stack.crm.requests_to("POST", CONTACT_SEARCH)
    assert (limited.status, retried.status) == (429, 200)
    assert limited.answered is not None
    assert retried.received - limited.answered >= 1.0
    assert len(stack.notes_for(note.conversation_id)) == 1


def test_a_retry_after_beyond_the_deadline_gives_up_at_once(stack: HandlerPeers, hubspot: HubSpotCrm) -> None:
    # Given the CRM asks to wait a minute, and the invocation has two seconds left
    stack.crm.add_fault("rate_limit", path=CONTACT_SEARCH, retry_after="60", times=1)
    # When the summary is logged
    # Then it gives up for a later retry instead of sleeping past the Lambda deadline
    with pytest.raises(CrmUnavailableError, match="would outlast this invocation"):
        hubspot.log_summary(_note(), crm_call(2.0))
    assert _statuses(stack, "POST", CONTACT_SEARCH) == [429]


# --- credentials -----------------------------------------------------------------------------


def test_a_401_after_rotation_rereads_the_secret_and_succeeds(stack: HandlerPeers, hubspot: HubSpotCrm) -> None:
    # Given a warm adapter that has read (and cached) the current token
    hubspot.log_summary(_note(), crm_call())
    # When the token is rotated in the CRM and the new one stored in Secrets Manager
    stack.crm.rotate_token("pat-na1-rotated")
    stack.put_secret({"access_token": "pat-na1-rotated"})
    note = _note()
    hubspot.log_summary(note, crm_call())
    # Then the stale token got one 401, the secret was re-read, and the note was written
    assert len(stack.notes_for(note.conversation_id)) == 1
    assert _statuses(stack, "POST", NOTE_CREATE) == [201, 401, 201]


def test_a_401_with_a_still_stale_secret_is_a_credentials_error(stack: HandlerPeers, hubspot: HubSpotCrm) -> None:
    # Given the CRM's token rotated but the secret was not updated
    stack.crm.rotate_token("pat-na1-nobody-stored-this")
    # When the summary is logged
    # Then, after one re-read of the secret, a specific credentials error is raised
    with pytest.raises(CrmCredentialsError, match=r"rejected the credentials \(401\) even after re-reading the secret"):
        hubspot.log_summary(_note(), crm_call())
    assert _statuses(stack, "POST", CONTACT_SEARCH) == [401, 401]
    assert stack.crm.notes == []


def test_a_missing_secret_is_a_specific_secret_error(stack: HandlerPeers) -> None:
    # Given an adapter pointed at a secret that does not exist
    hubspot = stack.hubspot(secret_id=unique("aftercall/missing"))
    # When it is used
    # Then the error names the secret and says it does not exist; the CRM saw nothing
    with pytest.raises(SecretError, match=r"cannot read CRM secret 'aftercall/missing-\w+': it does not exist"):
        hubspot.log_summary(_note(), crm_call())
    assert stack.crm.requests == []


def test_a_secret_without_access_token_is_a_specific_secret_error(stack: HandlerPeers) -> None:
    # Given a secret that holds JSON but not the access token
    secret_id = create_secret(unique("aftercall/crm"), {"token": "wrong-key"})
    hubspot = stack.hubspot(secret_id=secret_id)
    # When it is used
    # Then the error names the missing key
    with pytest.raises(SecretError, match=r"lacks 'access_token'"):
        hubspot.log_summary(_note(), crm_call())
    assert stack.crm.requests == []


def test_a_secret_that_is_not_json_is_a_specific_secret_error(stack: HandlerPeers) -> None:
    # Given a secret holding the bare token instead of a JSON object
    secret_id = create_secret(unique("aftercall/crm"), "pat-na1-bare")
    hubspot = stack.hubspot(secret_id=secret_id)
    # When it is used
    # Then the error says the secret is not a JSON object
    with pytest.raises(SecretError, match="is not a JSON object"):
        hubspot.log_summary(_note(), crm_call())


# --- unreachable, refusing, slow ------------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port whose kernel accepts connections, but nobody ever reads or answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


def test_an_unreachable_crm_is_unavailable(stack: HandlerPeers, closed_port: int) -> None:
    # Given a CRM URL whose port is closed
    hubspot = stack.hubspot(base_url=f"http://127.0.0.1:{closed_port}")
    # When the summary is logged
    # Then CrmUnavailableError says the connection failed, after the retries
    with pytest.raises(CrmUnavailableError, match=r"failed after 4 attempts \(last: connection failed"):
        hubspot.log_summary(_note(), crm_call())


def test_a_crm_that_never_answers_times_out(stack: HandlerPeers, silent_server: int) -> None:
    # Given a CRM that accepts connections and never answers
    hubspot = stack.hubspot(base_url=f"http://127.0.0.1:{silent_server}", read_timeout=0.2, max_attempts=2)
    # When the summary is logged
    # Then it fails as unavailable, naming the timeout
    with pytest.raises(CrmUnavailableError, match=r"last: no answer within 0\.2s"):
        hubspot.log_summary(_note(), crm_call())


def test_a_crm_that_keeps_failing_is_unavailable_after_the_retries(stack: HandlerPeers, hubspot: HubSpotCrm) -> None:
    # Given the CRM answers every search with 503
    stack.crm.add_fault("status", path=CONTACT_SEARCH, status=503)
    # When the summary is logged
    # Then it is unavailable after four attempts, and nothing was written
    with pytest.raises(CrmUnavailableError, match=r"failed after 4 attempts \(last: HTTP 503\)"):
        hubspot.log_summary(_note(), crm_call())
    assert _statuses(stack, "POST", CONTACT_SEARCH) == [503] * 4
    assert stack.crm.notes == []


def test_a_4xx_refusal_is_not_retried(stack: HandlerPeers, hubspot: HubSpotCrm) -> None:
    # Given the CRM refuses note creates as invalid
    refusal = {"status": "error", "message": "Property values were not valid", "category": "VALIDATION_ERROR"}
    stack.crm.add_fault("status", method="POST", path=NOTE_CREATE, status=400, body=refusal)
    # When the summary is logged
    # Then a CrmRequestError carries the status and HubSpot's message, after a single attempt
    with pytest.raises(CrmRequestError, match="Property values were not valid") as raised:
        hubspot.log_summary(_note(), crm_call())
    assert raised.value.status == 400
    assert _statuses(stack, "POST", NOTE_CREATE) == [400]


def test_no_request_starts_when_the_invocation_has_no_time_left(stack: HandlerPeers, hubspot: HubSpotCrm) -> None:
    # Given an invocation whose deadline has passed
    # When the summary is logged
    # Then it fails at once without calling the CRM
    with pytest.raises(CrmUnavailableError, match="no time left in this invocation"):
        hubspot.log_summary(_note(), crm_call(0.0))
    assert stack.crm.requests == []


def test_an_unknown_contact_is_reported_with_the_phone_masked(stack: HandlerPeers, hubspot: HubSpotCrm) -> None:
    # Given a caller the CRM does not know
    raw = "+14155559876"
    # When the summary is logged
    with pytest.raises(UnknownContactError) as raised:
        hubspot.log_summary(_note(customer=Customer(phone=raw, email=None)), crm_call())
    # Then the error says so with the number masked, never in full
    assert "+141****9876" in str(raised.value)
    assert raw not in str(raised.value)
    assert stack.crm.notes == []


# --- HTTPS only ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "loopback_allowed"),
    [
        pytest.param("http://api.hubapi.com", True, id="plain-http-to-a-remote-host"),
        pytest.param("http://10.0.0.8:8080", True, id="plain-http-to-a-private-address"),
        pytest.param("http://127.0.0.1:8080", False, id="plain-http-to-loopback-outside-local-mode"),
        pytest.param("ftp://api.hubapi.com", True, id="another-scheme"),
        pytest.param("https://", True, id="no-host"),
    ],
)
def test_only_https_is_allowed_except_loopback_in_local_mode(
    stack: HandlerPeers, url: str, loopback_allowed: bool
) -> None:
    # Given a CRM base URL that is not HTTPS (or not a URL at all)
    # When an adapter is built with it
    # Then it is refused before any request, naming the URL
    with pytest.raises(ConfigurationError, match="outbound calls use HTTPS"):
        stack.hubspot(base_url=url, allow_loopback_http=loopback_allowed)


def test_https_and_local_loopback_are_accepted(stack: HandlerPeers) -> None:
    # Given the real HubSpot URL and, in local mode, the fake on loopback
    # When adapters are built
    remote = stack.hubspot(base_url="https://api.hubapi.com/", allow_loopback_http=False)
    local = stack.hubspot(base_url=stack.crm.url.replace("127.0.0.1", "localhost"), allow_loopback_http=True)
    # Then both are accepted as given (without a trailing slash)
    assert remote.http.base_url == "https://api.hubapi.com"
    assert local.http.base_url.startswith("http://localhost:")
