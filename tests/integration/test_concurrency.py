"""Independent actions of one conversation run concurrently; a failure in one neither cancels nor
repeats the others, the invocation still fails, and the retry performs only what is missing.

Concurrency is shown by OVERLAP in the fake CRM's request log (each request's received/answered
readings, with the fake answering every request after a delay), never by a wall-clock threshold
on our code: with ``ACTION_CONCURRENCY=1`` the same log shows no overlap at all.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from aftercall.conversation import Conversation
from aftercall.crm.lookups import SharedLookups
from aftercall.errors import ActionsFailedError, CrmRequestError, CrmUnavailableError, UnknownContactError
from aftercall_ops.fakes.hubspot import RequestRecord
from tests.support.events import CUSTOMER_EMAIL, outbound_call_ended
from tests.support.lambda_context import lambda_context
from tests.support.stack import HandlerPeers

LATENCY_MS = 250
SEARCH = "/crm/v3/objects/contacts/search$"
NOTE_CREATE = "/crm/v3/objects/notes$"
TICKET_CREATE = "/crm/v3/objects/tickets$"
CONTACT = "/crm/v3/objects/contacts/"


def three_crm_actions(conv: Conversation) -> None:
    """A summary note, a ticket and the disposition: independent, each one CRM write."""
    conv.actions.log_summary({"topic": "renewal", "outcome": "wants a quote"})
    conv.actions.open_ticket("Send the renewal quote", "Customer asked for the 2027 pricing")
    conv.actions.log_disposition("info_requested")


def _writes(stack: HandlerPeers) -> list[RequestRecord]:
    return [
        r
        for r in stack.crm.requests
        if (r.method, r.path) in {("POST", NOTE_CREATE[:-1]), ("POST", TICKET_CREATE[:-1])}
        or (r.method == "PATCH" and r.path.startswith(CONTACT))
    ]


def peak_in_flight(records: Sequence[RequestRecord]) -> int:
    """The most requests the CRM was working on at the same moment (from its own log)."""
    edges: list[tuple[float, int]] = []
    for record in records:
        assert record.answered is not None
        edges += [(record.received, 1), (record.answered, -1)]
    peak = current = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):  # an answer before a receipt at a tie
        current += step
        peak = max(peak, current)
    return peak


def _handle(stack: HandlerPeers, event: dict[str, Any], **settings: Any) -> dict[str, Any]:
    report: dict[str, Any] = stack.runtime(**settings).handle(event, lambda_context(), three_crm_actions)
    return report


# --- concurrently, not one after another ----------------------------------------------------------


def test_independent_actions_are_in_the_crm_at_the_same_time(stack: HandlerPeers) -> None:
    # Given a CRM that answers every request after a delay
    stack.crm.add_fault("latency", ms=LATENCY_MS)
    # When the handler performs a note, a ticket and a disposition for one outbound call
    report = _handle(stack, outbound_call_ended())
    # Then the three writes were all in the CRM at once: each was received before any was answered
    writes = _writes(stack)
    assert len(writes) == 3
    assert max(w.received for w in writes) < min(w.answered or 0 for w in writes)
    assert peak_in_flight(writes) == 3
    assert {outcome["status"] for outcome in report["actions"].values()} == {"done"}


def test_with_action_concurrency_one_the_actions_run_one_after_another(stack: HandlerPeers) -> None:
    # Given the same CRM delay
    stack.crm.add_fault("latency", ms=LATENCY_MS)
    # When the handler runs with ACTION_CONCURRENCY=1 (the sequential baseline of the benchmark)
    _handle(stack, outbound_call_ended(), action_concurrency=1)
    # Then no two CRM requests overlapped: each began after the previous one was answered
    assert len(_writes(stack)) == 3
    assert peak_in_flight(stack.crm.requests) == 1


def test_action_concurrency_bounds_how_many_run_at_once(stack: HandlerPeers) -> None:
    # Given the same CRM delay, and the contact already known to the warm process
    stack.crm.add_fault("latency", ms=LATENCY_MS)
    runtime = stack.runtime(action_concurrency=2)
    runtime.handle(outbound_call_ended(), lambda_context(), three_crm_actions)
    stack.crm.clear_requests()
    # When it handles the next call of that customer with ACTION_CONCURRENCY=2
    runtime.handle(outbound_call_ended(), lambda_context(), three_crm_actions)
    # Then two writes overlapped, never three
    assert len(_writes(stack)) == 3
    assert peak_in_flight(_writes(stack)) == 2


def test_concurrent_actions_share_one_contact_lookup(stack: HandlerPeers) -> None:
    # Given a cold process (the contact is not cached) and a CRM that answers after a delay
    stack.crm.add_fault("latency", ms=LATENCY_MS)
    # When three actions that all need the contact run at once
    _handle(stack, outbound_call_ended())
    # Then the CRM was searched once, not once per action (HubSpot limits search requests per second)
    assert len(stack.crm.requests_to("POST", SEARCH)) == 1
    assert len(_writes(stack)) == 3


def test_a_failed_shared_lookup_fails_each_action_and_the_retry_looks_up_again(stack: HandlerPeers) -> None:
    # Given the CRM refuses the first contact search, after a while (so every action waits on it)
    stack.crm.add_fault("latency", method="POST", path=SEARCH, ms=LATENCY_MS)
    stack.crm.add_fault("status", method="POST", path=SEARCH, status=400, times=1)
    event = outbound_call_ended()
    runtime = stack.runtime()
    # When the handler performs the three actions, and Lambda retries the event
    with pytest.raises(ActionsFailedError) as raised:
        runtime.handle(event, lambda_context(), three_crm_actions)
    retry = runtime.handle(event, lambda_context(), three_crm_actions)
    # Then each action failed with the CRM's refusal, nothing was written, and the retry did it all
    assert set(raised.value.failures) == {"crm_summary", "support_ticket", "disposition"}
    assert all(isinstance(error, CrmRequestError) for error in raised.value.failures.values())
    assert {outcome["status"] for outcome in retry["actions"].values()} == {"done"}
    assert len(stack.crm.requests_to("POST", SEARCH)) == 2
    assert len(_writes(stack)) == 3


# --- a failure neither cancels nor repeats the others ---------------------------------------------


def test_a_failing_action_neither_cancels_nor_repeats_the_others_and_the_retry_does_only_it(
    stack: HandlerPeers,
) -> None:
    # Given a CRM that takes its time over the note and the lead update, and refuses the ticket,
    # the first time, sooner
    stack.crm.add_fault("latency", method="POST", path=NOTE_CREATE, ms=2 * LATENCY_MS)
    stack.crm.add_fault("latency", method="PATCH", path=CONTACT, ms=2 * LATENCY_MS)
    stack.crm.add_fault("latency", method="POST", path=TICKET_CREATE, ms=LATENCY_MS / 2)
    stack.crm.add_fault("status", method="POST", path=TICKET_CREATE, status=400, times=1)
    event = outbound_call_ended(customer_email=CUSTOMER_EMAIL)
    conversation_id = event["detail"]["conversation_id"]
    runtime = stack.runtime()
    # When the handler performs the note, the ticket and the disposition
    with pytest.raises(ActionsFailedError) as raised:
        runtime.handle(event, lambda_context(), three_crm_actions)
    first = list(stack.crm.requests)
    # Then the invocation failed for the ticket alone ...
    assert set(raised.value.failures) == {"support_ticket"}
    assert isinstance(raised.value.failures["support_ticket"], CrmRequestError)
    # ... the note and the disposition, in flight when the ticket was refused, still completed
    (refused,) = [r for r in first if r.path == TICKET_CREATE[:-1]]
    completed = [r for r in _writes(stack) if r.path != TICKET_CREATE[:-1]]
    assert len(completed) == 2
    assert all(r.received < (refused.answered or 0) < (r.answered or 0) for r in completed)
    assert all(r.status is not None and 200 <= r.status < 300 for r in completed)
    assert len(stack.notes_for(conversation_id)) == 1
    assert stack.crm.contact(stack.contact_id)["properties"]["hs_lead_status"] == "IN_PROGRESS"  # type: ignore[index]
    # When Lambda retries the event
    stack.crm.clear_requests()
    retry = runtime.handle(event, lambda_context(), three_crm_actions)
    # Then only the ticket was performed: one create, no second note, no second update
    statuses = {name: outcome["status"] for name, outcome in retry["actions"].items()}
    assert statuses == {"crm_summary": "already_done", "disposition": "already_done", "support_ticket": "done"}
    assert [(r.method, r.path) for r in _writes(stack)] == [("POST", TICKET_CREATE[:-1])]
    assert len(stack.notes_for(conversation_id)) == 1
    assert len(stack.tickets_for(conversation_id)) == 1


# --- the shared lookup itself ---------------------------------------------------------------------


def test_concurrent_lookups_of_one_key_make_one_call_and_all_get_its_answer() -> None:
    # Given a lookup that is held until released, and a leader already waiting in it
    lookups: SharedLookups[str, str] = SharedLookups()
    release = threading.Event()
    calls: list[str] = []

    def lookup() -> str:
        calls.append("search")
        release.wait(5)
        return "contact-1001"

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = [pool.submit(lookups.get, "+14155550123", lookup, 5.0) for _ in range(4)]
        # When it answers
        release.set()
        # Then every caller got the one answer, from one call, and it is cached
        assert [answer.result() for answer in answers] == ["contact-1001"] * 4
    assert calls == ["search"]
    assert lookups.get("+14155550123", lambda: "not called", 0) == "contact-1001"


def test_a_caller_that_cannot_wait_for_a_concurrent_lookup_gives_up_with_a_crm_error() -> None:
    # Given a lookup in flight that will not answer soon
    lookups: SharedLookups[str, str] = SharedLookups()
    started, release = threading.Event(), threading.Event()

    def held() -> str:
        started.set()
        release.wait(5)
        return "contact-1001"

    with ThreadPoolExecutor(max_workers=1) as pool:
        leader = pool.submit(lookups.get, "key", held, 5.0)
        assert started.wait(5)
        # When a caller with almost no time left asks for the same key
        with pytest.raises(CrmUnavailableError, match="gave up waiting"):
            lookups.get("key", lambda: "not called", 0.01)
        release.set()
        # Then it gave up, and the leader still got its answer
        assert leader.result() == "contact-1001"


def test_a_failed_lookup_is_not_cached() -> None:
    # Given a lookup that failed
    lookups: SharedLookups[str, str] = SharedLookups()

    def refused() -> str:
        raise UnknownContactError("no contact")

    with pytest.raises(UnknownContactError):
        lookups.get("key", refused, 1.0)
    # When the same key is asked for again
    # Then it is looked up again
    assert lookups.get("key", lambda: "contact-1002", 1.0) == "contact-1002"
