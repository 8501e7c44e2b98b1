"""The action ledger on DynamoDB (moto server): claim / complete / fail, and lease take-over."""

from __future__ import annotations

import time

import pytest

from aftercall import aws
from aftercall.deadline import Deadline
from aftercall.errors import ActionInProgressError
from aftercall.ledger import COMPLETED, FAILED, IN_PROGRESS, ActionLedger, ledger_key
from tests.support.stack import LocalStack, unique


@pytest.fixture
def ledger(stack: LocalStack) -> ActionLedger:
    return stack.ledger()


def test_a_first_claim_takes_the_action(ledger: ActionLedger) -> None:
    # Given an action never seen before
    conversation = unique("conv")
    # When it is claimed
    claim = ledger.claim(conversation, "crm_summary", Deadline.after(30))
    # Then this invocation owns it, as a first attempt with nothing to recover
    assert (claim.done, claim.recovering, claim.attempt) == (False, False, 1)
    item = ledger.lookup(conversation, "crm_summary")
    assert item is not None
    assert item["status"] == IN_PROGRESS
    assert item["id"] == ledger_key(conversation, "crm_summary")


def test_a_completed_action_is_reported_done_with_its_result(ledger: ActionLedger) -> None:
    # Given an action that was claimed and completed with the CRM object it made
    conversation = unique("conv")
    ledger.claim(conversation, "crm_summary", Deadline.after(30))
    ledger.complete(conversation, "crm_summary", {"kind": "note", "object_id": "1002"})
    # When a retry claims it again
    claim = ledger.claim(conversation, "crm_summary", Deadline.after(30))
    # Then it is done, and the stored mapping conversation -> object comes back
    assert claim.done is True
    assert claim.result == {"kind": "note", "object_id": "1002"}
    item = ledger.lookup(conversation, "crm_summary")
    assert item is not None
    assert item["status"] == COMPLETED


def test_a_failed_action_can_be_claimed_again_as_a_recovery(ledger: ActionLedger) -> None:
    # Given an action whose first attempt failed
    conversation = unique("conv")
    ledger.claim(conversation, "support_ticket", Deadline.after(30))
    ledger.fail(conversation, "support_ticket", "CrmUnavailableError: HTTP 503")
    failed = ledger.lookup(conversation, "support_ticket")
    # When the retry claims it
    claim = ledger.claim(conversation, "support_ticket", Deadline.after(30))
    # Then it may run again, knowing an earlier attempt may have half-done it
    assert failed is not None
    assert (failed["status"], failed["error"]) == (FAILED, "CrmUnavailableError: HTTP 503")
    assert (claim.done, claim.recovering, claim.attempt) == (False, True, 2)
    item = ledger.lookup(conversation, "support_ticket")
    assert item is not None
    assert "error" not in item


def test_an_action_held_by_a_live_invocation_cannot_be_claimed(ledger: ActionLedger) -> None:
    # Given an action claimed by an invocation whose deadline is still ahead
    conversation = unique("conv")
    ledger.claim(conversation, "crm_summary", Deadline.after(30))
    # When another invocation claims it
    # Then it is told the action is in progress elsewhere
    with pytest.raises(ActionInProgressError, match="being performed by another invocation"):
        ledger.claim(conversation, "crm_summary", Deadline.after(30))


def test_a_lease_that_ran_past_its_deadline_is_taken_over(ledger: ActionLedger) -> None:
    # Given an action claimed by an invocation that then timed out (its deadline passed)
    conversation = unique("conv")
    ledger.claim(conversation, "crm_summary", Deadline.after(0.05))
    time.sleep(0.1)
    # When a later invocation claims it
    claim = ledger.claim(conversation, "crm_summary", Deadline.after(30))
    # Then it takes over, recovering (the timed-out attempt may have written to the CRM)
    assert (claim.done, claim.recovering, claim.attempt) == (False, True, 2)


def test_a_lease_taken_over_tells_the_new_attempt_when_the_old_one_was_stopped(ledger: ActionLedger) -> None:
    # Given an action claimed by an invocation that was stopped at its deadline in the middle of it
    conversation = unique("conv")
    stopped = Deadline.after(0.05)
    ledger.claim(conversation, "crm_summary", stopped)
    time.sleep(0.1)
    # When a later invocation takes it over
    claim = ledger.claim(conversation, "crm_summary", Deadline.after(30))
    # Then it learns that a write may have gone out, unanswered, up to that deadline
    assert claim.unanswered_write_at == stopped.epoch_ms / 1000


def test_a_failure_with_an_unanswered_write_is_passed_on_to_the_next_attempt(ledger: ActionLedger) -> None:
    # Given an attempt that sent a create, got no answer, and failed
    conversation = unique("conv")
    ledger.claim(conversation, "support_ticket", Deadline.after(30))
    sent_at = time.time()
    ledger.fail(conversation, "support_ticket", "CrmUnavailableError: no answer", unanswered_write_at=sent_at)
    # When the retry claims it, and fails in turn without sending anything (so passes it on again)
    retry = ledger.claim(conversation, "support_ticket", Deadline.after(30))
    ledger.fail(conversation, "support_ticket", "CrmUnavailableError: HTTP 503", retry.unanswered_write_at)
    third = ledger.claim(conversation, "support_ticket", Deadline.after(30))
    # Then every later attempt knows when that create went out (to the millisecond)
    assert retry.unanswered_write_at == pytest.approx(sent_at, abs=0.001)
    assert third.unanswered_write_at == retry.unanswered_write_at


def test_a_plain_failure_leaves_nothing_in_doubt(ledger: ActionLedger) -> None:
    # Given an attempt that failed with an answer from the CRM (nothing left unanswered)
    conversation = unique("conv")
    ledger.claim(conversation, "support_ticket", Deadline.after(30))
    ledger.fail(conversation, "support_ticket", "CrmUnavailableError: HTTP 503")
    # When the retry claims it
    claim = ledger.claim(conversation, "support_ticket", Deadline.after(30))
    # Then it recovers (searches first) but has no unanswered write to wait for
    assert (claim.recovering, claim.unanswered_write_at) == (True, None)


def test_actions_of_one_conversation_are_independent(ledger: ActionLedger) -> None:
    # Given one action completed and one failed for a conversation
    conversation = unique("conv")
    ledger.claim(conversation, "crm_summary", Deadline.after(30))
    ledger.complete(conversation, "crm_summary", {"kind": "note", "object_id": "1"})
    ledger.claim(conversation, "support_ticket", Deadline.after(30))
    ledger.fail(conversation, "support_ticket", "boom")
    # When both are claimed again
    summary = ledger.claim(conversation, "crm_summary", Deadline.after(30))
    ticket = ledger.claim(conversation, "support_ticket", Deadline.after(30))
    # Then only the failed one runs again
    assert summary.done is True
    assert ticket.done is False


def test_ledger_items_carry_a_ttl_for_the_retention_window(stack: LocalStack) -> None:
    # Given a ledger with a one-hour retention
    ledger = ActionLedger(stack.table, 3600)
    conversation = unique("conv")
    # When an action is claimed
    before = int(time.time())
    ledger.claim(conversation, "crm_summary", Deadline.after(30))
    # Then its expiration is one retention window ahead (DynamoDB TTL removes it afterwards)
    item = aws.client("dynamodb").get_item(
        TableName=stack.table, Key={"id": {"S": ledger_key(conversation, "crm_summary")}}
    )["Item"]
    assert before + 3600 <= int(item["expiration"]["N"]) <= int(time.time()) + 3600
