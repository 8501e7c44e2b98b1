"""The action ledger on DynamoDB (moto server): its entries on the conversation's Powertools record,
started and closed by that record's own writes (aftercall.guard, through Powertools itself)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

from aftercall import aws
from aftercall.deadline import Deadline
from aftercall.errors import ActionInProgressError
from aftercall.guard import ConversationGuard
from aftercall.ledger import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    RECORD_COMPLETED,
    RECORD_IN_PROGRESS,
    RECORD_PREFIX,
    ActionLedger,
    Claim,
    Prior,
    completed_entry,
    failed_entry,
    record_key,
)
from tests.support.lambda_context import lambda_context
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


class Stopped(BaseException):
    """Lambda stopping the process at its deadline: nothing after it runs, Powertools neither
    completes nor releases its record (it catches ``Exception`` only)."""


@dataclass
class Attempt:
    """One invocation of a conversation through Powertools' idempotency with our persistence layer:
    what the guard handed it, and what it does (records, then returns, fails or is stopped)."""

    stack: HandlerPeers
    conversation: str
    timeout: float = 30.0
    record: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    fail_with: Mapping[str, dict[str, Any]] | None = None
    fail_before_performing: bool = False
    stop: bool = False
    prior: Prior | None = None

    def run(self) -> Prior:
        guard = ConversationGuard(self.stack.table, aws.client("dynamodb"))
        ledger = ActionLedger(self.stack.table, 3600)
        config = IdempotencyConfig(event_key_jmespath="conversation_id", raise_on_no_idempotency_key=True)
        config.register_lambda_context(lambda_context(self.timeout))
        key = record_key(self.conversation)

        def process(detail: dict[str, Any]) -> dict[str, Any]:
            self.prior = guard.prior(key)
            if self.fail_before_performing:
                raise RuntimeError("end_function raised")
            for action, result in self.record.items():
                ledger.record(self.conversation, action, result)
            if self.stop:
                raise Stopped
            if self.fail_with is not None:
                guard.close_with(key, dict(self.fail_with))
                raise RuntimeError("actions failed")
            return {"conversation_id": self.conversation, "actions": {}}

        once = idempotent_function(
            data_keyword_argument="detail", persistence_store=guard, config=config, key_prefix=RECORD_PREFIX
        )(process)
        with contextlib.suppress(RuntimeError, Stopped):
            once(detail={"conversation_id": self.conversation})
        assert self.prior is not None, "the attempt did not take the conversation"
        return self.prior


def test_a_first_attempt_finds_nothing_before_it(stack: HandlerPeers) -> None:
    # Given a conversation never performed before
    conversation = unique("conv")
    # When an attempt takes it
    prior = Attempt(stack, conversation).run()
    # Then nothing is done and nothing is in doubt
    assert (prior.previous, prior.stopped_at) == ({}, None)
    assert prior.claim("crm_summary") == Claim(done=False)


def test_a_result_recorded_while_others_run_is_done_for_the_next_attempt(
    stack: HandlerPeers, ledger: ActionLedger
) -> None:
    # Given an attempt that recorded its summary and then failed
    conversation = unique("conv")
    Attempt(stack, conversation, record={"crm_summary": {"kind": "note", "object_id": "1002"}}, fail_with={}).run()
    # When the next attempt takes the conversation
    claim = Attempt(stack, conversation).run().claim("crm_summary")
    # Then the summary is done, with its result
    assert (claim.done, claim.result) == (True, {"kind": "note", "object_id": "1002"})
    item = ledger.lookup(conversation, "crm_summary")
    assert item is not None
    assert (item["status"], json.loads(item["result"])) == (COMPLETED, {"kind": "note", "object_id": "1002"})


def test_a_failed_attempt_passes_on_what_it_did_and_what_it_left_in_doubt(
    stack: HandlerPeers, ledger: ActionLedger
) -> None:
    # Given an attempt that completed the summary and failed the ticket after a write went unanswered
    conversation = unique("conv")
    sent_at = time.time() - 3
    outcomes = {
        "crm_summary": completed_entry({"object_id": "1"}),
        "support_ticket": failed_entry("CrmUnavailableError: no answer", sent_at),
    }
    Attempt(stack, conversation, fail_with=outcomes).run()
    # Then Powertools' release wrote them and left no status: the conversation is free for a retry
    item = _item(stack, record_key(conversation))
    assert "status" not in item
    assert {"a.crm_summary", "a.support_ticket"} <= set(item)
    assert ledger.lookup(conversation, "support_ticket")["status"] == FAILED  # type: ignore[index]
    # When the retry takes it
    prior = Attempt(stack, conversation).run()
    # Then the summary is done, the ticket is recovered after its unanswered write, a new action is new
    assert prior.stopped_at is None
    assert prior.claim("crm_summary").done is True
    ticket = prior.claim("support_ticket")
    assert (ticket.done, ticket.recovering) == (False, True)
    assert ticket.unanswered_write_at == pytest.approx(sent_at, abs=0.01)
    assert prior.claim("notification:team") == Claim(done=False)


def test_a_plain_failure_leaves_nothing_in_doubt(stack: HandlerPeers) -> None:
    # Given an attempt whose ticket failed with a clear refusal
    conversation = unique("conv")
    Attempt(stack, conversation, fail_with={"support_ticket": failed_entry("CrmRequestError: 400")}).run()
    # When the retry takes the conversation
    ticket = Attempt(stack, conversation).run().claim("support_ticket")
    # Then the ticket is recovering (it may look first) with no unanswered write to wait for
    assert (ticket.done, ticket.recovering, ticket.unanswered_write_at) == (False, True, None)


def test_an_attempt_stopped_while_performing_leaves_its_unrecorded_actions_in_doubt(stack: HandlerPeers) -> None:
    # Given an attempt that recorded its summary and was then stopped at its deadline
    conversation = unique("conv")
    first = Attempt(stack, conversation, timeout=0.3, record={"crm_summary": {"object_id": "1"}}, stop=True)
    first.run()
    lease = int(_item(stack, record_key(conversation))["in_progress_expiration"]["N"]) / 1000
    time.sleep(0.4)
    # When Lambda's retry takes the conversation (the record's lease has run out)
    prior = Attempt(stack, conversation).run()
    # Then the summary is done; the rest may have been sent before the old deadline
    assert prior.stopped_at == pytest.approx(lease)
    assert prior.claim("crm_summary").done is True
    ticket = prior.claim("support_ticket")
    assert (ticket.done, ticket.recovering) == (False, True)
    assert ticket.unanswered_write_at == pytest.approx(lease)


def test_a_stopped_attempts_doubt_survives_a_retry_that_fails_before_performing(stack: HandlerPeers) -> None:
    # Given an attempt stopped at its deadline, then a retry whose End function raised
    conversation = unique("conv")
    Attempt(stack, conversation, timeout=0.3, stop=True).run()
    lease = int(_item(stack, record_key(conversation))["in_progress_expiration"]["N"]) / 1000
    time.sleep(0.4)
    assert Attempt(stack, conversation, fail_before_performing=True).run().stopped_at == pytest.approx(lease)
    # When the next retry takes the conversation
    prior = Attempt(stack, conversation).run()
    # Then the first attempt's actions are still in doubt from its deadline
    assert prior.stopped_at == pytest.approx(lease)
    assert prior.claim("crm_summary").recovering is True


def test_a_first_attempt_that_fails_before_performing_leaves_no_item(stack: HandlerPeers) -> None:
    # Given a first attempt whose End function raised (nothing performed, nothing earlier)
    conversation = unique("conv")
    # When Powertools releases the record
    Attempt(stack, conversation, fail_before_performing=True).run()
    # Then the conversation leaves no item behind, as with Powertools' own layer
    assert _item(stack, record_key(conversation)) == {}


def test_a_live_holder_keeps_the_conversation(stack: HandlerPeers) -> None:
    # Given an attempt stopped with a long lease: its invocation could still be running
    conversation = unique("conv")
    Attempt(stack, conversation, timeout=30, stop=True).run()
    # When a twin tries to take the conversation
    # Then Powertools refuses it as in progress, through our persistence layer
    with pytest.raises(IdempotencyAlreadyInProgressError):
        Attempt(stack, conversation).run()


def test_a_completed_conversation_is_returned_and_its_entries_kept(stack: HandlerPeers) -> None:
    # Given a conversation that recorded a note and completed
    conversation = unique("conv")
    Attempt(stack, conversation, record={"crm_summary": {"object_id": "9"}}).run()
    # When the same conversation arrives again
    # Then Powertools answers from the record (the attempt never runs) and the entry is still there
    with pytest.raises(AssertionError, match="did not take"):
        Attempt(stack, conversation).run()
    item = _item(stack, record_key(conversation))
    assert item["status"]["S"] == RECORD_COMPLETED
    assert "a.crm_summary" in item


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
    Attempt(stack, conversation, fail_with={"disposition": failed_entry("CrmUnavailableError: 503")}).run()
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
    # Given a conversation whose attempt recorded one outcome and failed with another
    conversation = unique("conv")
    before = int(time.time())
    Attempt(
        stack,
        conversation,
        record={"crm_summary": {"object_id": "1"}},
        fail_with={"support_ticket": failed_entry("CrmRequestError: 400")},
    ).run()
    # When a follow-up's send is claimed later
    ActionLedger(stack.table, 3600).claim(conversation, "follow_up_sent:sms", Deadline.after(30))
    # Then one item holds all of them, on the conversation's record key, expiring a retention window ahead
    item = _item(stack, record_key(conversation))
    assert {name for name in item if name.startswith("a.")} == {
        "a.crm_summary",
        "a.support_ticket",
        "a.follow_up_sent:sms",
    }
    assert "in_progress_expiration" not in item  # the failed attempt ended: nothing of it is in doubt
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
