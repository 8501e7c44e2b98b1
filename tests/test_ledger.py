"""The ledger on DynamoDB (moto server): one item per conversation, its lease, and one action's claims."""

from __future__ import annotations

import time
from typing import Any

import pytest

from aftercall import aws
from aftercall.deadline import Deadline
from aftercall.errors import ActionInProgressError, ConflictingDuplicateError, ConversationInProgressError
from aftercall.ledger import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    ActionLedger,
    completed_entry,
    failed_entry,
    ledger_key,
)
from tests.support.stack import LocalStack, unique

CONTENT = "3f1c0a"
OTHER_CONTENT = "9b2e77"


@pytest.fixture
def ledger(stack: LocalStack) -> ActionLedger:
    return stack.ledger()


def _item(stack: LocalStack, conversation: str) -> dict[str, Any]:
    return dict(
        aws.client("dynamodb").get_item(TableName=stack.table, Key={"id": {"S": ledger_key(conversation)}})["Item"]
    )


# --- the conversation ---------------------------------------------------------------------------------


def test_a_new_conversation_is_taken_with_nothing_done_before(ledger: ActionLedger) -> None:
    # Given a conversation never seen before
    conversation = unique("conv")
    # When an invocation begins it
    deadline = Deadline.after(30)
    begun = ledger.begin(conversation, CONTENT, deadline)
    # Then it is this invocation's until its deadline, first attempt, every action new
    assert (begun.duplicate, begun.attempt, begun.stopped_at) == (False, 1, None)
    claim = begun.claim("crm_summary")
    assert (claim.done, claim.recovering, claim.unanswered_write_at) == (False, False, None)
    in_progress = ledger.lookup(conversation, "crm_summary")
    assert in_progress is not None
    assert in_progress["status"] == IN_PROGRESS
    assert in_progress["in_progress_expiration"] == deadline.epoch_ms


def test_a_completed_conversation_is_a_duplicate_with_its_results(ledger: ActionLedger) -> None:
    # Given a conversation whose summary was recorded and which finished with its ticket
    conversation = unique("conv")
    ledger.begin(conversation, CONTENT, Deadline.after(30))
    ledger.record(conversation, "crm_summary", {"kind": "note", "object_id": "1002"})
    ledger.finish(conversation, completed=True, entries={"support_ticket": completed_entry({"object_id": "77"})})
    # When the same content arrives again
    again = ledger.begin(conversation, CONTENT, Deadline.after(30))
    # Then it is a duplicate, and both results are there
    assert again.duplicate is True
    assert again.claim("crm_summary").result == {"kind": "note", "object_id": "1002"}
    assert again.claim("support_ticket").result == {"object_id": "77"}
    assert ledger.lookup(conversation, "support_ticket")["status"] == COMPLETED  # type: ignore[index]


def test_the_same_conversation_with_other_content_is_a_conflict(ledger: ActionLedger) -> None:
    # Given a completed conversation
    conversation = unique("conv")
    ledger.begin(conversation, CONTENT, Deadline.after(30))
    ledger.finish(conversation, completed=True, entries={})
    # When an event with the same id and different content arrives
    # Then it is refused as a conflicting duplicate
    with pytest.raises(ConflictingDuplicateError, match=conversation):
        ledger.begin(conversation, OTHER_CONTENT, Deadline.after(30))


def test_a_conversation_held_by_a_live_invocation_cannot_be_taken(ledger: ActionLedger) -> None:
    # Given a conversation in progress in another invocation
    conversation = unique("conv")
    ledger.begin(conversation, CONTENT, Deadline.after(30))
    # When a twin tries to begin it
    # Then it is told the conversation is in progress
    with pytest.raises(ConversationInProgressError):
        ledger.begin(conversation, CONTENT, Deadline.after(30))


def test_a_failed_attempt_passes_on_what_it_did_and_what_it_left_in_doubt(ledger: ActionLedger) -> None:
    # Given an attempt that completed the summary and failed the ticket after a write went unanswered
    conversation = unique("conv")
    ledger.begin(conversation, CONTENT, Deadline.after(30))
    sent_at = time.time() - 3
    ledger.finish(
        conversation,
        completed=False,
        entries={
            "crm_summary": completed_entry({"object_id": "1"}),
            "support_ticket": failed_entry("CrmUnavailableError: no answer", sent_at),
        },
    )
    # When the retry begins
    retry = ledger.begin(conversation, CONTENT, Deadline.after(30))
    # Then the summary is done, the ticket is to be recovered after its unanswered write, a new action is new
    assert (retry.duplicate, retry.attempt) == (False, 2)
    assert retry.claim("crm_summary").done is True
    ticket = retry.claim("support_ticket")
    assert (ticket.done, ticket.recovering) == (False, True)
    assert ticket.unanswered_write_at == pytest.approx(sent_at, abs=0.01)
    assert retry.claim("notification:team").recovering is False
    assert ledger.lookup(conversation, "support_ticket")["status"] == FAILED  # type: ignore[index]


def test_a_plain_failure_leaves_nothing_in_doubt(ledger: ActionLedger) -> None:
    # Given an attempt whose ticket failed with a clear refusal
    conversation = unique("conv")
    ledger.begin(conversation, CONTENT, Deadline.after(30))
    ledger.finish(conversation, completed=False, entries={"support_ticket": failed_entry("CrmRequestError: 400")})
    # When the retry begins
    ticket = ledger.begin(conversation, CONTENT, Deadline.after(30)).claim("support_ticket")
    # Then the ticket is recovering (it may look first) with no unanswered write to wait for
    assert (ticket.done, ticket.recovering, ticket.unanswered_write_at) == (False, True, None)


def test_a_stopped_invocation_is_taken_over_and_its_unfinished_actions_are_in_doubt(ledger: ActionLedger) -> None:
    # Given an invocation that recorded its summary and was then stopped at its deadline
    conversation = unique("conv")
    stopped = Deadline.after(0.05)
    ledger.begin(conversation, CONTENT, stopped)
    ledger.record(conversation, "crm_summary", {"object_id": "1"})
    time.sleep(0.1)
    # When Lambda's retry begins it
    retry = ledger.begin(conversation, CONTENT, Deadline.after(30))
    # Then it takes over; the summary is done, the rest may have been sent before the old deadline
    assert retry.stopped_at == pytest.approx(stopped.epoch_ms / 1000)
    assert retry.claim("crm_summary").done is True
    ticket = retry.claim("support_ticket")
    assert (ticket.done, ticket.recovering) == (False, True)
    assert ticket.unanswered_write_at == pytest.approx(stopped.epoch_ms / 1000)


def test_a_failure_of_the_end_function_releases_the_conversation(ledger: ActionLedger) -> None:
    # Given an attempt that failed before performing anything
    conversation = unique("conv")
    ledger.begin(conversation, CONTENT, Deadline.after(30))
    ledger.finish(conversation, completed=False, entries={})
    # When the retry begins
    retry = ledger.begin(conversation, CONTENT, Deadline.after(30))
    # Then it is a normal attempt with nothing in doubt
    assert (retry.duplicate, retry.previous, retry.stopped_at) == (False, {}, None)


def test_one_item_per_conversation_with_a_ttl_for_the_retention_window(stack: LocalStack) -> None:
    # Given a ledger with a one-hour retention
    ledger = ActionLedger(stack.table, 3600)
    conversation = unique("conv")
    # When a conversation with two actions is processed
    before = int(time.time())
    ledger.begin(conversation, CONTENT, Deadline.after(30))
    ledger.record(conversation, "crm_summary", {"object_id": "1"})
    ledger.finish(conversation, completed=True, entries={"support_ticket": completed_entry({"object_id": "2"})})
    # Then one item holds it all, under 1 KB (one write unit), expiring one retention window ahead
    item = _item(stack, conversation)
    assert {name for name in item if name.startswith("a.")} == {"a.crm_summary", "a.support_ticket"}
    assert "lease" not in item
    assert before + 3600 <= int(item["expiration"]["N"]) <= int(time.time()) + 3600
    scanned = aws.client("dynamodb").scan(TableName=stack.table)["Items"]
    assert [i["id"]["S"] for i in scanned if conversation in i["id"]["S"]] == [ledger_key(conversation)]


# --- one action on its own (the FollowUp function's sends) -----------------------------------------------


def test_a_first_claim_takes_the_action(ledger: ActionLedger) -> None:
    # Given a follow-up send never attempted
    conversation = unique("conv")
    # When it is claimed
    claim = ledger.claim(conversation, "follow_up_sent:sms", Deadline.after(30))
    # Then it is this invocation's, not a recovery
    assert (claim.done, claim.recovering) == (False, False)
    assert ledger.lookup(conversation, "follow_up_sent:sms")["status"] == IN_PROGRESS  # type: ignore[index]


def test_a_completed_action_is_reported_done_with_its_result(ledger: ActionLedger) -> None:
    # Given a send claimed and completed
    conversation = unique("conv")
    ledger.claim(conversation, "follow_up_sent:sms", Deadline.after(30))
    ledger.complete(conversation, "follow_up_sent:sms", {"kind": "sms", "message_id": "m-1"})
    # When it is claimed again
    claim = ledger.claim(conversation, "follow_up_sent:sms", Deadline.after(30))
    # Then it is done with its result
    assert (claim.done, claim.result) == (True, {"kind": "sms", "message_id": "m-1"})


def test_an_action_held_by_a_live_invocation_cannot_be_claimed(ledger: ActionLedger) -> None:
    # Given a send claimed by a live invocation
    conversation = unique("conv")
    ledger.claim(conversation, "follow_up_sent:sms", Deadline.after(30))
    # When another claims it
    # Then it is refused
    with pytest.raises(ActionInProgressError):
        ledger.claim(conversation, "follow_up_sent:sms", Deadline.after(30))


def test_a_failed_or_stopped_action_is_claimed_again_as_a_recovery(ledger: ActionLedger) -> None:
    # Given one send that failed after an unanswered write, and one whose invocation was stopped
    conversation = unique("conv")
    sent_at = time.time() - 2
    ledger.claim(conversation, "follow_up_sent:email", Deadline.after(30))
    ledger.fail(conversation, "follow_up_sent:email", "SesError: timeout", unanswered_write_at=sent_at)
    stopped = Deadline.after(0.05)
    ledger.claim(conversation, "follow_up_sent:sms", stopped)
    time.sleep(0.1)
    # When each is claimed again
    email = ledger.claim(conversation, "follow_up_sent:email", Deadline.after(30))
    sms = ledger.claim(conversation, "follow_up_sent:sms", Deadline.after(30))
    # Then both are recoveries, each told when its write may have gone out
    assert (email.recovering, sms.recovering) == (True, True)
    assert email.unanswered_write_at == pytest.approx(sent_at, abs=0.01)
    assert sms.unanswered_write_at == pytest.approx(stopped.epoch_ms / 1000)
