"""Fuzzing the EndHandler end to end on the local stack: processed, or refused with a documented error.

For every event, however broken, :meth:`EndHandlerRuntime.handle` either processes it, or rejects
it with :class:`InvalidEventError`/:class:`ConflictingDuplicateError` parked in the failed-events
queue (raised instead only when parking itself is impossible), or raises a documented retryable
error (``aftercall.errors``). Never an unclassified crash. A rejected event has no side effect
at all: no request on the fake CRM's log, no item in the idempotency/ledger table, no schedule.

One warm runtime and one stack serve every example of a test, as one warm Lambda process would;
each example compares the stack before and after it. Every example costs real round trips to the
moto server and the fake CRM, so the counts here are lower than in test_fuzz_event.py, which
covers the contract's breadth at no such cost.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import hypothesis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aftercall import aws
from aftercall.conversation import Conversation
from aftercall.errors import (
    ActionsFailedError,
    AftercallError,
    ConflictingDuplicateError,
    EndFunctionError,
    InvalidEventError,
)
from aftercall.follow_ups.schedule import schedule_name
from aftercall.handler import EndHandlerRuntime, parse_event
from aftercall_ops.fakes.hubspot import FakeCrm
from end_function import end_function as repo_end_function
from tests.support.events import CUSTOMER_EMAIL, CUSTOMER_PHONE, conversation_ended
from tests.support.fuzz import INJECTIONS, broken_events, valid_state
from tests.support.lambda_context import lambda_context
from tests.support.peers import FollowUpPeers
from tests.support.stack import HandlerPeers, create_queue, create_secret, create_table, unique

#: What a rejection may be, and what a retryable failure may be (all from aftercall.errors).
REJECTIONS = (InvalidEventError, ConflictingDuplicateError)
RETRYABLE = (ActionsFailedError, EndFunctionError)
#: The only tags the HubSpot adapter itself writes into a note body.
NOTE_TAGS = {"p", "b", "br"}


@dataclass
class World:
    stack: HandlerPeers
    peers: FollowUpPeers
    runtime: EndHandlerRuntime


@dataclass(frozen=True)
class SideEffects:
    """Everything a processed event leaves behind, counted."""

    crm_requests: int
    table_items: int
    schedules: int


@pytest.fixture(scope="module")
def world(moto_endpoint: str) -> Iterator[World]:
    """A stack with the seeded customer and follow-ups configured, and one warm runtime on it."""
    with FakeCrm(token=unique("pat-na1")) as crm:
        contact_id = crm.add_contact(phone=CUSTOMER_PHONE, email=CUSTOMER_EMAIL, properties={"firstname": "Jane"})
        stack = HandlerPeers(
            table=create_table(unique("aftercall-idempotency")),
            queue_url=create_queue(unique("aftercall-failed-events")),
            secret_id=create_secret(unique("aftercall/crm"), {"access_token": crm.token}),
            crm=crm,
            contact_id=contact_id,
        )
        peers = FollowUpPeers.create()
        yield World(stack, peers, stack.runtime(**peers.settings()))
        peers.delete()
        stack.delete()


def side_effects(world: World) -> SideEffects:
    table = aws.client("dynamodb").scan(TableName=world.stack.table, Select="COUNT", ConsistentRead=True)
    schedules = aws.client("scheduler").list_schedules(GroupName=world.peers.group).get("Schedules", [])
    return SideEffects(len(world.stack.crm.requests), int(table["Count"]), len(schedules))


def plan_every_kind_of_action(conv: Conversation) -> None:
    """An End function that plans a CRM note and a scheduled SMS for every conversation."""
    conv.actions.log_summary()
    conv.actions.schedule_follow_up(datetime.now(UTC) + timedelta(days=1), "Thanks for calling", "sms")


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON text (NaN included, which never equals itself as a float)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def handle_and_check(world: World, event: Any) -> dict[str, Any] | AftercallError:
    """Run one event through the runtime and check the invariant; returns the report or the error."""
    before = side_effects(world)
    try:
        outcome: dict[str, Any] | AftercallError = world.runtime.handle(
            event, lambda_context(), plan_every_kind_of_action
        )
    except AftercallError as error:  # any other exception is an unclassified crash: the test fails
        outcome = error
    parked = world.stack.parked()
    after = side_effects(world)
    # Shown by --hypothesis-show-statistics: how the examples split between the outcomes
    hypothesis.event("outcome", outcome.get("status") if isinstance(outcome, dict) else type(outcome).__name__)

    if isinstance(outcome, dict) and outcome["status"] == "rejected":
        # Rejected: parked once with its reason, in the OnFailure shape, and nothing else happened
        assert outcome["error_type"] in {e.__name__ for e in REJECTIONS}
        (record,) = parked
        assert record["responsePayload"] == {"errorType": outcome["error_type"], "errorMessage": outcome["error"]}
        assert _same_json(record["requestPayload"], event)
        assert after == before
    elif isinstance(outcome, dict):
        # Processed: nothing parked
        assert outcome["status"] == "processed"
        assert parked == []
    elif isinstance(outcome, REJECTIONS):
        # Refused but too large to park: raised, so Lambda's own retries and OnFailure keep it
        assert parked == []
        assert after == before
    else:
        # A documented retryable failure; the End function's own failure performs nothing
        assert isinstance(outcome, RETRYABLE), repr(outcome)
        assert parked == []
        if isinstance(outcome, EndFunctionError):
            assert after == before
    return outcome


@settings(max_examples=120, deadline=None)
@given(event=broken_events())
def test_any_broken_event_is_processed_or_refused_with_a_documented_error_and_no_side_effect(
    world: World, event: Any
) -> None:
    # Given an event broken in one to three ways (or not an object at all), and an End function
    # that plans a CRM note and a follow-up for every conversation
    # When the warm runtime handles it
    # Then it is processed, or refused and parked with no side effect, or fails retryably with a
    # documented error (checked in handle_and_check; anything else fails the test)
    handle_and_check(world, event)


@settings(max_examples=30, deadline=None)
@given(state=valid_state)
def test_any_valid_state_is_processed_with_one_note_and_one_schedule(world: World, state: dict[str, Any]) -> None:
    # Given a valid event whose state holds any JSON, injection-looking text and odd Unicode
    event = conversation_ended(state=state)
    conversation_id = event["detail"]["conversation_id"]
    # When the warm runtime handles it
    outcome = handle_and_check(world, event)
    # Then it is processed: one note for the conversation and the schedule of its follow-up
    assert isinstance(outcome, dict)
    assert set(outcome["actions"]) == {"crm_summary", "follow_up:sms"}
    assert len(world.stack.notes_for(conversation_id)) == 1
    schedule = aws.client("scheduler").get_schedule(
        Name=schedule_name(conversation_id, "sms"), GroupName=world.peers.group
    )
    assert json.loads(schedule["Target"]["Input"])["conversation_id"] == conversation_id


@settings(max_examples=20, deadline=None)
@given(first=valid_state, second=valid_state)
def test_a_second_event_with_the_same_id_and_other_content_is_parked_without_side_effects(
    world: World, first: dict[str, Any], second: dict[str, Any]
) -> None:
    # Given a conversation processed with one state
    event = conversation_ended(state=first)
    handle_and_check(world, event)
    # When an event with the same conversation id but a different state arrives
    again = conversation_ended(conversation_id=event["detail"]["conversation_id"], state={**second, "_": "other"})
    outcome = handle_and_check(world, again)
    # Then it is rejected as a conflicting duplicate (parked, nothing done: see handle_and_check)
    assert isinstance(outcome, dict)
    assert outcome["error_type"] == "ConflictingDuplicateError"


class _NoteBody(HTMLParser):
    """The tags and the text of a HubSpot note body, as a browser would read them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)

    def handle_data(self, data: str) -> None:
        self.text += data


@settings(max_examples=30, deadline=None)
@given(
    topic=st.sampled_from(INJECTIONS),
    sentiment=st.sampled_from(INJECTIONS),
    resolution=st.sampled_from(INJECTIONS),
)
def test_injection_looking_state_reaches_the_crm_note_escaped(
    world: World, topic: str, sentiment: str, resolution: str
) -> None:
    # Given a call whose state holds HTML, script, template, SQL and CRLF text where the repo's
    # end_function puts state into the CRM summary
    event = conversation_ended(
        state={"last_topic": topic, "sentiment": sentiment, "resolution": resolution, "support_needed": False}
    )
    conversation_id = event["detail"]["conversation_id"]
    # (what end_function sees: the sanitised state, carriage returns stripped)
    state = parse_event(event, "sandbox").state
    values = [state["last_topic"], state["sentiment"], state["resolution"]]
    # When the handler runs the repo's end_function
    report = world.runtime.handle(event, lambda_context(), repo_end_function)
    # Then the note body (HubSpot renders it as HTML) holds each value escaped ...
    assert report["status"] == "processed"
    (note,) = world.stack.notes_for(conversation_id)
    body = note["properties"]["hs_note_body"]
    for value in values:
        assert html.escape(value) in body
    # ... so a browser sees only the adapter's own tags, and reads back the exact text
    parsed = _NoteBody()
    parsed.feed(body)
    assert parsed.tags <= NOTE_TAGS
    for value in values:
        assert value in parsed.text
    # And no state text reached a request header (the CRLF values stay in the JSON body)
    requests = world.stack.crm.requests_to("POST", "/crm/v3/objects/notes$")
    headers = [f"{k}: {v}" for r in requests for k, v in r.headers.items()]
    assert not any("X-Injected" in h or "Set-Cookie" in h or "\r" in h or "\n" in h for h in headers)
