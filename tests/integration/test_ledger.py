"""The action ledger on DynamoDB (moto server): one item per conversation beside its idempotency record."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig

from aftercall import aws
from aftercall.deadline import Deadline
from aftercall.errors import ActionInProgressError
from aftercall.ledger import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    RECORD_COMPLETED,
    RECORD_IN_PROGRESS,
    RECORD_PREFIX,
    ActionLedger,
    Claim,
    completed_entry,
    failed_entry,
    ledger_key,
    record_key,
)
from tests.support.stack import HandlerPeers, unique


@pytest.fixture
def ledger(stack: HandlerPeers) -> ActionLedger:
    return stack.ledger()


def _item(stack: HandlerPeers, key: str) -> dict[str, Any]:
    return dict(aws.client("dynamodb").get_item(TableName=stack.table, Key={"id": {"S": key}}).get("Item", {}))


def _record(stack: HandlerPeers, conversation: str, status: str, lease: Deadline, data: Any = None) -> None:
    """The conversation's Powertools idempotency record, as Powertools writes it."""
    item = {
        "id": {"S": record_key(conversation)},
        "status": {"S": status},
        "in_progress_expiration": {"N": str(lease.epoch_ms)},
        "expiration": {"N": str(int(time.time()) + 3600)},
    }
    if data is not None:
        item["data"] = {"S": json.dumps(data)}
    aws.client("dynamodb").put_item(TableName=stack.table, Item=item)


# --- the conversation ---------------------------------------------------------------------------------


def test_the_record_key_is_the_one_powertools_computes(stack: HandlerPeers) -> None:
    # Given Powertools' persistence layer configured as the handler configures it
    persistence = DynamoDBPersistenceLayer(table_name=stack.table)
    persistence.configure(IdempotencyConfig(event_key_jmespath="conversation_id"), key_prefix=RECORD_PREFIX)
    # When both compute the key of one conversation
    conversation = unique("conv")
    # Then they agree
    assert record_key(conversation) == persistence._get_hashed_idempotency_key({"conversation_id": conversation})


def test_a_first_attempt_finds_nothing_before_it(ledger: ActionLedger) -> None:
    # Given a conversation never performed before
    conversation = unique("conv")
    # When an attempt starts performing it
    prior = ledger.start(conversation, Deadline.after(30))
    # Then nothing is done and nothing is in doubt
    assert (prior.previous, prior.stopped_at) == ({}, None)
    assert prior.claim("crm_summary") == Claim(done=False)


def test_a_result_recorded_while_others_run_is_done_for_the_next_attempt(ledger: ActionLedger) -> None:
    # Given an attempt that recorded its summary and then failed
    conversation = unique("conv")
    ledger.start(conversation, Deadline.after(30))
    ledger.record(conversation, "crm_summary", {"kind": "note", "object_id": "1002"})
    ledger.close(conversation, {})
    # When the next attempt starts
    claim = ledger.start(conversation, Deadline.after(30)).claim("crm_summary")
    # Then the summary is done, with its result
    assert (claim.done, claim.result) == (True, {"kind": "note", "object_id": "1002"})
    item = ledger.lookup(conversation, "crm_summary")
    assert item is not None
    assert (item["status"], json.loads(item["result"])) == (COMPLETED, {"kind": "note", "object_id": "1002"})


def test_a_failed_attempt_passes_on_what_it_did_and_what_it_left_in_doubt(ledger: ActionLedger) -> None:
    # Given an attempt that completed the summary and failed the ticket after a write went unanswered
    conversation = unique("conv")
    ledger.start(conversation, Deadline.after(30))
    sent_at = time.time() - 3
    ledger.close(
        conversation,
        {
            "crm_summary": completed_entry({"object_id": "1"}),
            "support_ticket": failed_entry("CrmUnavailableError: no answer", sent_at),
        },
    )
    # When the retry starts (Powertools deleted its record when the attempt failed)
    prior = ledger.start(conversation, Deadline.after(30))
    # Then the summary is done, the ticket is recovered after its unanswered write, a new action is new
    assert prior.stopped_at is None
    assert prior.claim("crm_summary").done is True
    ticket = prior.claim("support_ticket")
    assert (ticket.done, ticket.recovering) == (False, True)
    assert ticket.unanswered_write_at == pytest.approx(sent_at, abs=0.01)
    assert prior.claim("notification:team") == Claim(done=False)
    assert ledger.lookup(conversation, "support_ticket")["status"] == FAILED  # type: ignore[index]


def test_a_plain_failure_leaves_nothing_in_doubt(ledger: ActionLedger) -> None:
    # Given an attempt whose ticket failed with a clear refusal
    conversation = unique("conv")
    ledger.start(conversation, Deadline.after(30))
    ledger.close(conversation, {"support_ticket": failed_entry("CrmRequestError: 400")})
    # When the retry starts
    ticket = ledger.start(conversation, Deadline.after(30)).claim("support_ticket")
    # Then the ticket is recovering (it may look first) with no unanswered write to wait for
    assert (ticket.done, ticket.recovering, ticket.unanswered_write_at) == (False, True, None)


def test_an_attempt_stopped_while_performing_leaves_its_unrecorded_actions_in_doubt(ledger: ActionLedger) -> None:
    # Given an attempt that recorded its summary and was then stopped at its deadline
    conversation = unique("conv")
    stopped = Deadline.after(0.05)
    ledger.start(conversation, stopped)
    ledger.record(conversation, "crm_summary", {"object_id": "1"})
    time.sleep(0.1)
    # When Lambda's retry starts
    prior = ledger.start(conversation, Deadline.after(30))
    # Then the summary is done; the rest may have been sent before the old deadline
    assert prior.stopped_at == pytest.approx(stopped.epoch_ms / 1000)
    assert prior.claim("crm_summary").done is True
    ticket = prior.claim("support_ticket")
    assert (ticket.done, ticket.recovering) == (False, True)
    assert ticket.unanswered_write_at == pytest.approx(stopped.epoch_ms / 1000)


def test_the_completed_record_holds_the_results_the_ledger_did_not_write(
    stack: HandlerPeers, ledger: ActionLedger
) -> None:
    # Given one conversation completed with its report and one held by a live invocation
    done, held = unique("conv"), unique("conv")
    report = {"actions": {"crm_summary": {"status": "done", "result": {"object_id": "7"}}}}
    _record(stack, done, RECORD_COMPLETED, Deadline.after(-1), report)
    _record(stack, held, RECORD_IN_PROGRESS, Deadline.after(30))
    # When an operator looks an action up
    summary = ledger.lookup(done, "crm_summary")
    # Then the completed one's result comes from the record; the held one is in progress
    assert summary is not None
    assert (summary["status"], json.loads(summary["result"])) == (COMPLETED, {"object_id": "7"})
    assert ledger.lookup(held, "support_ticket")["status"] == IN_PROGRESS  # type: ignore[index]
    assert ledger.lookup(done, "support_ticket") is None


def test_a_retry_that_completed_an_action_the_ledger_saw_fail_reads_as_completed(
    stack: HandlerPeers, ledger: ActionLedger
) -> None:
    # Given a first attempt whose disposition failed (the ledger item keeps that outcome) and a
    # retry that completed it, its result riding on the completed record (a repeatable action)
    conversation = unique("conv")
    ledger.start(conversation, Deadline.after(30))
    ledger.close(conversation, {"disposition": failed_entry("CrmUnavailableError: 503")})
    report = {"actions": {"disposition": {"status": "done", "result": {"object_id": "501"}}}}
    _record(stack, conversation, RECORD_COMPLETED, Deadline.after(-1), report)
    # When an operator looks the action up, or describes the conversation
    looked_up = ledger.lookup(conversation, "disposition")
    (described,) = ledger.describe(conversation)
    # Then both say what happened last: completed, with the retry's result
    assert looked_up is not None
    assert (looked_up["status"], json.loads(looked_up["result"])) == (COMPLETED, {"object_id": "501"})
    assert (described.action, described.status, described.result) == ("disposition", COMPLETED, {"object_id": "501"})


def test_one_item_per_conversation_with_a_ttl_for_the_retention_window(stack: HandlerPeers) -> None:
    # Given a ledger with a one-hour retention
    ledger = ActionLedger(stack.table, 3600)
    conversation = unique("conv")
    # When two outcomes of one conversation are written
    before = int(time.time())
    ledger.start(conversation, Deadline.after(30))
    ledger.record(conversation, "crm_summary", {"object_id": "1"})
    ledger.close(conversation, {"support_ticket": failed_entry("CrmRequestError: 400")})
    # Then one item holds both, expiring one retention window ahead (DynamoDB TTL removes it)
    item = _item(stack, ledger_key(conversation))
    assert {name for name in item if name.startswith("a.")} == {"a.crm_summary", "a.support_ticket"}
    assert "performing" not in item  # the failed attempt ended: nothing of it is in doubt
    assert before + 3600 <= int(item["expiration"]["N"]) <= int(time.time()) + 3600


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
