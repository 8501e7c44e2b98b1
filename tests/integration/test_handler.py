"""The EndHandler end to end: event in, CRM writes out, failures parked, on the local stack.

AWS is the moto server (DynamoDB idempotency + ledger, SQS failed-events queue, Secrets Manager),
the CRM is the fake HubSpot over HTTP. The End functions here are user code, as a team would
write it; the runtime and the adapter are the real ones.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import app as entry_point
from aftercall.conversation import Conversation
from aftercall.errors import (
    ActionsFailedError,
    CrmCredentialsError,
    EndFunctionError,
    InvalidEventError,
    SecretError,
    UnknownContactError,
)
from aftercall.failures import REJECTED_CONDITION
from aftercall.ledger import COMPLETED, FAILED
from aftercall.observability import logger as runtime_logger
from end_function import end_function
from tests.support.events import (
    CUSTOMER_PHONE,
    DROP,
    conversation_ended,
    outbound_call_ended,
    re_emitted,
    support_call_ended,
)
from tests.support.lambda_context import FUNCTION_ARN, lambda_context
from tests.support.stack import HandlerPeers, unique

NOTE_CREATE = "/crm/v3/objects/notes$"
TICKET_CREATE = "/crm/v3/objects/tickets$"


def _conversation_id(event: dict[str, Any]) -> str:
    return str(event["detail"]["conversation_id"])


def _creates(stack: HandlerPeers, path: str) -> int:
    return len(stack.crm.requests_to("POST", path))


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """The runtime's structured log lines, captured for this test."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(runtime_logger.registered_formatter)
    underlying = logging.getLogger(runtime_logger.name)  # the stdlib logger Powertools writes through
    underlying.addHandler(handler)
    yield buffer
    underlying.removeHandler(handler)


# --- the happy path ----------------------------------------------------------------------------


def test_a_support_call_writes_one_note_and_one_ticket(stack: HandlerPeers) -> None:
    # Given an inbound call the agent flagged for support, and the repo's end_function
    event = support_call_ended()
    conversation_id = _conversation_id(event)
    # When the handler processes it
    report = stack.runtime().handle(event, lambda_context(), end_function)
    # Then one note and one ticket exist, the report and the ledger name them, nothing is parked
    (note,) = stack.notes_for(conversation_id)
    (ticket,) = stack.tickets_for(conversation_id)
    assert report["status"] == "processed"
    assert report["actions"]["crm_summary"]["result"]["object_id"] == note["id"]
    assert report["actions"]["support_ticket"]["result"]["object_id"] == ticket["id"]
    assert ticket["properties"]["subject"] == "Charged twice for the November invoice"
    ledger = stack.ledger()
    summary_item = ledger.lookup(conversation_id, "crm_summary")
    assert summary_item is not None
    assert summary_item["status"] == COMPLETED
    assert json.loads(summary_item["result"])["object_id"] == note["id"]
    assert stack.parked() == []


def test_a_resolved_call_writes_a_note_and_no_ticket(stack: HandlerPeers) -> None:
    # Given an inbound call the agent resolved
    event = conversation_ended()
    # When the handler processes it
    report = stack.runtime().handle(event, lambda_context(), end_function)
    # Then only the summary was written
    assert set(report["actions"]) == {"crm_summary"}
    assert len(stack.notes_for(_conversation_id(event))) == 1
    assert stack.crm.tickets == []


def test_an_end_function_that_plans_nothing_is_processed_without_crm_calls(stack: HandlerPeers) -> None:
    # Given an End function that decides this call needs no after-call work
    def end_nothing(conv: Conversation) -> None:
        assert conv.id

    # When the handler processes a call
    report = stack.runtime().handle(conversation_ended(), lambda_context(), end_nothing)
    # Then it is processed with no actions and the CRM saw nothing
    assert report["status"] == "processed"
    assert report["actions"] == {}
    assert stack.crm.requests == []


# --- never twice -------------------------------------------------------------------------------


def test_a_duplicate_event_writes_nothing_again(stack: HandlerPeers) -> None:
    # Given a support call already processed
    event = support_call_ended()
    stack.runtime().handle(event, lambda_context(), end_function)
    creates_before = _creates(stack, NOTE_CREATE) + _creates(stack, TICKET_CREATE)
    # When the platform emits it again (new event id and time) to a cold process
    report = stack.runtime().handle(re_emitted(event), lambda_context(), end_function)
    # Then it is reported as a duplicate, and the CRM still holds one note and one ticket
    assert report["duplicate"] is True
    assert report["status"] == "processed"
    assert len(stack.notes_for(_conversation_id(event))) == 1
    assert len(stack.tickets_for(_conversation_id(event))) == 1
    assert _creates(stack, NOTE_CREATE) + _creates(stack, TICKET_CREATE) == creates_before


def test_a_500_on_the_note_then_success_makes_one_note(stack: HandlerPeers) -> None:
    # Given the CRM fails the first note create with 500 (nothing written)
    stack.crm.add_fault("status", method="POST", path=NOTE_CREATE, status=500, times=1)
    event = conversation_ended()
    # When the handler processes the call
    report = stack.runtime().handle(event, lambda_context(), end_function)
    # Then the action succeeded within the invocation, with exactly one note
    assert report["actions"]["crm_summary"]["status"] == "done"
    assert len(stack.notes_for(_conversation_id(event))) == 1


def test_a_500_after_the_note_was_written_makes_no_second_note(stack: HandlerPeers) -> None:
    # Given the CRM writes the note but answers 500
    stack.crm.add_fault("after_commit_status", method="POST", path=NOTE_CREATE, status=500, times=1)
    event = conversation_ended()
    # When the handler processes the call
    report = stack.runtime().handle(event, lambda_context(), end_function)
    # Then the note the CRM did write is found and recorded; there is no second one
    (note,) = stack.notes_for(_conversation_id(event))
    assert report["actions"]["crm_summary"]["result"]["object_id"] == note["id"]
    assert _creates(stack, NOTE_CREATE) == 1


def test_a_failed_ticket_fails_the_invocation_and_a_retry_creates_only_the_ticket(stack: HandlerPeers) -> None:
    # Given the CRM is down for tickets (creates and searches) but fine for notes
    stack.crm.add_fault("status", path="/crm/v3/objects/tickets", status=503)
    event = support_call_ended()
    conversation_id = _conversation_id(event)
    # When the handler processes the call
    with pytest.raises(ActionsFailedError) as raised:
        stack.runtime().handle(event, lambda_context(), end_function)
    # Then the invocation fails naming support_ticket only; the note was written and kept
    assert set(raised.value.failures) == {"support_ticket"}
    assert "support_ticket" in str(raised.value)
    assert len(stack.notes_for(conversation_id)) == 1
    assert stack.crm.tickets == []
    ledger = stack.ledger()
    ticket_item = ledger.lookup(conversation_id, "support_ticket")
    summary_item = ledger.lookup(conversation_id, "crm_summary")
    assert ticket_item is not None
    assert summary_item is not None
    assert (summary_item["status"], ticket_item["status"]) == (COMPLETED, FAILED)
    # When the CRM recovers and Lambda retries the event
    stack.crm.clear_faults()
    report = stack.runtime().handle(event, lambda_context(), end_function)
    # Then only the ticket is created; the note is not written again
    assert report["actions"]["crm_summary"]["status"] == "already_done"
    assert report["actions"]["support_ticket"]["status"] == "done"
    assert len(stack.notes_for(conversation_id)) == 1
    assert len(stack.tickets_for(conversation_id)) == 1
    assert _creates(stack, NOTE_CREATE) == 1


def test_a_rotated_crm_token_is_picked_up_by_a_warm_process(stack: HandlerPeers) -> None:
    # Given a warm runtime that has already read the CRM secret
    runtime = stack.runtime()
    runtime.handle(conversation_ended(), lambda_context(), end_function)
    # When the token is rotated in the CRM and in Secrets Manager, and a new call ends
    stack.crm.rotate_token("pat-na1-rotated")
    stack.put_secret({"access_token": "pat-na1-rotated"})
    event = conversation_ended()
    report = runtime.handle(event, lambda_context(), end_function)
    # Then the new secret is used after one 401 and the note is written
    assert report["status"] == "processed"
    assert len(stack.notes_for(_conversation_id(event))) == 1
    assert [r.status for r in stack.crm.requests_to("POST", NOTE_CREATE)] == [201, 401, 201]


# --- refused and parked ------------------------------------------------------------------------


def test_the_same_conversation_with_different_content_is_rejected_and_parked(stack: HandlerPeers) -> None:
    # Given a conversation already processed
    first = support_call_ended()
    runtime = stack.runtime()
    runtime.handle(first, lambda_context(), end_function)
    # When an event arrives with the same conversation id but a different state
    second = support_call_ended(conversation_id=_conversation_id(first), state={"last_topic": "refund"})
    context = lambda_context()
    report = runtime.handle(second, context, end_function)
    # Then it is rejected as a conflicting duplicate, nothing more is written, and the second
    # event is parked in the failed-events queue in the OnFailure shape, with the reason
    assert report["status"] == "rejected"
    assert report["error_type"] == "ConflictingDuplicateError"
    assert _conversation_id(first) in report["error"]
    assert len(stack.notes_for(_conversation_id(first))) == 1
    (record,) = stack.parked()
    assert record["requestPayload"] == second
    assert record["requestContext"]["condition"] == REJECTED_CONDITION
    assert record["requestContext"]["requestId"] == context.aws_request_id
    assert record["requestContext"]["functionArn"] == FUNCTION_ARN
    assert record["responsePayload"]["errorType"] == "ConflictingDuplicateError"
    assert record["version"] == "1.0"
    assert set(record["responseContext"]) == {"statusCode", "executedVersion", "functionError"}


def _nested(depth: int) -> dict[str, Any]:
    state: dict[str, Any] = {"leaf": "deep"}
    for _ in range(depth):
        state = {"level": state}
    return state


INVALID_EVENTS = [
    pytest.param(lambda: conversation_ended(caller="555-0123"), "detail.caller", id="bad-phone"),
    pytest.param(
        lambda: conversation_ended(conversation_id=DROP), "detail.conversation_id", id="missing-conversation-id"
    ),
    pytest.param(
        lambda: conversation_ended(envelope={"detail-type": "Conversation Started"}), "detail-type", id="detail-type"
    ),
    pytest.param(lambda: conversation_ended(transcript="..."), "detail: 1 unexpected field", id="extra-field"),
    pytest.param(lambda: conversation_ended(environment="live"), "detail.environment", id="wrong-stage"),
    pytest.param(lambda: conversation_ended(state={"blob": "x" * 210_000}), "detail.state", id="state-too-big"),
    pytest.param(lambda: conversation_ended(state=_nested(40)), "detail.state", id="state-too-deep"),
    pytest.param(lambda: {"hello": "world"}, "detail", id="not-an-event"),
]


@pytest.mark.parametrize(("make_event", "field"), INVALID_EVENTS)
def test_an_invalid_event_is_rejected_parked_and_never_reaches_the_crm(
    stack: HandlerPeers, make_event: Callable[[], dict[str, Any]], field: str
) -> None:
    # Given an event that breaks the contract
    event = make_event()
    # When the handler receives it
    report = stack.runtime().handle(event, lambda_context(), end_function)
    # Then it is rejected with InvalidEventError naming the field, parked with the reason,
    # and no CRM request was made at all
    assert report["status"] == "rejected"
    assert report["error_type"] == "InvalidEventError"
    assert field in report["error"]
    (record,) = stack.parked()
    assert record["requestPayload"] == event
    assert record["responsePayload"] == {"errorType": "InvalidEventError", "errorMessage": report["error"]}
    assert stack.crm.requests == []


def test_an_invalid_event_without_a_queue_raises_so_lambda_keeps_it(stack: HandlerPeers) -> None:
    # Given a runtime with no failed-events queue configured
    runtime = stack.runtime(failed_events_queue_url=None)
    # When an invalid event arrives
    # Then the handler raises, so Lambda's own retry/OnFailure path keeps the event
    with pytest.raises(InvalidEventError, match=r"detail\.caller"):
        runtime.handle(conversation_ended(caller="nope"), lambda_context(), end_function)
    assert stack.crm.requests == []


def test_an_invalid_event_is_still_raised_when_parking_fails(stack: HandlerPeers) -> None:
    # Given a failed-events queue that does not exist
    runtime = stack.runtime(failed_events_queue_url=stack.queue_url + "-gone")
    # When an invalid event arrives
    # Then the rejection is raised (not swallowed), so the event is not lost
    with pytest.raises(InvalidEventError) as raised:
        runtime.handle(conversation_ended(caller="nope"), lambda_context(), end_function)
    assert raised.value.__cause__ is not None


# --- errors in the End function and in the CRM ------------------------------------------------


def test_an_end_function_that_raises_performs_nothing_and_can_be_retried(stack: HandlerPeers) -> None:
    # Given an End function with a bug
    def buggy(conv: Conversation) -> None:
        conv.actions.log_summary()
        _ = conv.state.sentimnet  # typo: raises AttributeError

    event = conversation_ended()
    # When the handler runs it
    with pytest.raises(EndFunctionError, match="end_function raised AttributeError") as raised:
        stack.runtime().handle(event, lambda_context(), buggy)
    # Then the original error is chained, and nothing was performed in the CRM
    assert isinstance(raised.value.__cause__, AttributeError)
    assert stack.crm.requests == []
    # And once the bug is fixed, Lambda's retry of the same event is processed (not a duplicate)
    report = stack.runtime().handle(event, lambda_context(), end_function)
    assert report["status"] == "processed"
    assert "duplicate" not in report
    assert len(stack.notes_for(_conversation_id(event))) == 1


def test_a_missing_crm_secret_fails_the_action_with_a_secret_error(stack: HandlerPeers) -> None:
    # Given a runtime pointed at a secret that does not exist
    runtime = stack.runtime(crm_secret_id=unique("aftercall/missing"))
    # When a call is processed
    with pytest.raises(ActionsFailedError) as raised:
        runtime.handle(conversation_ended(), lambda_context(), end_function)
    # Then the summary failed with a specific secret error (not a CRM one), and the CRM saw nothing
    error = raised.value.failures["crm_summary"]
    assert isinstance(error, SecretError)
    assert not isinstance(error, CrmCredentialsError)
    assert "does not exist" in str(error)
    assert stack.crm.requests == []


def test_an_unknown_caller_fails_the_action_without_leaking_the_number(stack: HandlerPeers, logs: io.StringIO) -> None:
    # Given a call from a number the CRM does not know, and UnknownCallerPolicy=park
    raw = "+14155559876"
    event = conversation_ended(caller=raw)
    # When it is processed
    with pytest.raises(ActionsFailedError) as raised:
        stack.runtime(unknown_caller_policy="park").handle(event, lambda_context(), end_function)
    # Then the summary failed as an unknown contact, with the number masked in the error and logs
    error = raised.value.failures["crm_summary"]
    assert isinstance(error, UnknownContactError)
    assert "+141****9876" in str(raised.value)
    assert raw not in str(raised.value)
    assert raw not in logs.getvalue()
    assert _conversation_id(event) in logs.getvalue()


def test_logs_are_structured_keyed_by_conversation_and_free_of_raw_numbers(
    stack: HandlerPeers, logs: io.StringIO
) -> None:
    # Given a support call
    event = support_call_ended()
    # When it is processed
    stack.runtime().handle(event, lambda_context(), end_function)
    # Then every log line is JSON carrying the conversation id, and the caller's number is masked
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert lines
    assert all(line.get("conversation_id") == _conversation_id(event) for line in lines)
    assert CUSTOMER_PHONE not in logs.getvalue()
    started = next(line for line in lines if line["message"] == "conversation ended")
    assert started["customer_phone"] == "+141****0123"


# --- the Lambda entry point (functions/end_handler/app.py) --------------------------------------


@pytest.fixture
def app_env(stack: HandlerPeers, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``app.py`` configured by environment variables, exactly as template.yaml configures it."""
    for name, value in {
        "STAGE": "sandbox",
        "IDEMPOTENCY_TABLE": stack.table,
        "CRM_SECRET_ID": stack.secret_id,
        "CRM_BASE_URL": stack.crm.url,
        "FAILED_EVENTS_QUEUE_URL": stack.queue_url,
        "AFTERCALL_LOCAL": "true",
        "NOTIFICATIONS_TOPIC_ARN": stack.notifications_topic_arn or "",
    }.items():
        monkeypatch.setenv(name, value)
    entry_point._runtime = None  # a cold start: the runtime is built from this test's environment
    yield
    entry_point._runtime = None


@pytest.mark.usefixtures("app_env")
def test_the_lambda_entry_point_turns_a_support_call_into_a_note_and_a_ticket(stack: HandlerPeers) -> None:
    # Given the deployed entry point and an inbound support call
    event = support_call_ended()
    # When Lambda invokes it
    result = entry_point.lambda_handler(event, lambda_context())
    # Then a note and a ticket exist for the conversation
    assert result["status"] == "processed"
    assert len(stack.notes_for(_conversation_id(event))) == 1
    assert len(stack.tickets_for(_conversation_id(event))) == 1


@pytest.mark.usefixtures("app_env")
def test_the_lambda_entry_point_records_an_outbound_disposition(stack: HandlerPeers) -> None:
    # Given an outbound call whose prospect asked to be called back later
    event = outbound_call_ended(state={"disposition": "callback_requested"})
    # When Lambda invokes the entry point
    result = entry_point.lambda_handler(event, lambda_context())
    # Then the contact's lead status is set, and the call is summarised
    assert result["actions"]["disposition"]["status"] == "done"
    contact = stack.crm.contact(stack.contact_id)
    assert contact is not None
    assert contact["properties"]["hs_lead_status"] == "BAD_TIMING"
    assert len(stack.notes_for(_conversation_id(event))) == 1


@pytest.mark.usefixtures("app_env")
def test_the_lambda_entry_point_reuses_its_runtime_while_warm(stack: HandlerPeers) -> None:
    # Given a cold entry point
    # When it is invoked twice
    entry_point.lambda_handler(conversation_ended(), lambda_context())
    warm = entry_point._runtime
    entry_point.lambda_handler(conversation_ended(), lambda_context())
    # Then the second invocation used the runtime (and CRM session) the first one built
    assert warm is not None
    assert entry_point._runtime is warm
    assert len(stack.crm.notes) == 2


@pytest.mark.usefixtures("app_env")
def test_the_lambda_entry_point_parks_an_invalid_event(stack: HandlerPeers) -> None:
    # Given an event missing its conversation id
    event = conversation_ended(conversation_id=DROP)
    # When Lambda invokes the entry point
    result = entry_point.lambda_handler(event, lambda_context())
    # Then it is rejected and parked, and the CRM saw nothing
    assert result["status"] == "rejected"
    (record,) = stack.parked()
    assert record["requestPayload"] == event
    assert stack.crm.requests == []
