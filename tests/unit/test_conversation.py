"""What ``end_function(conv)`` sees, and how planning actions validates at once (no CRM involved)."""

from __future__ import annotations

from typing import Any

import pytest

from aftercall.actions import ActionPlan
from aftercall.conversation import Conversation, State
from aftercall.crm.base import Crm
from aftercall.handler import parse_event
from end_function import end_function
from tests.support.events import CUSTOMER_PHONE, conversation_ended, outbound_call_ended, support_call_ended


def _no_crm() -> Crm:
    raise AssertionError("planning an action must not touch the CRM")


def _conversation(event: dict[str, Any]) -> Conversation:
    detail = parse_event(event, "sandbox")
    return Conversation(detail, ActionPlan(detail, _no_crm))


def test_conv_exposes_the_platform_docs_names() -> None:
    # Given an inbound support call
    event = support_call_ended()
    # When it becomes a Conversation
    conv = _conversation(event)
    # Then conv.id, conv.duration and conv.state.get work as the platform docs show
    assert conv.id == event["detail"]["conversation_id"]
    assert conv.duration == event["detail"]["duration_seconds"]
    assert conv.state.get("last_topic") == "billing"
    assert conv.state.get("missing", "Unknown") == "Unknown"
    assert conv.customer_phone == CUSTOMER_PHONE
    assert (conv.direction, conv.channel, conv.environment) == ("inbound", "voice", "sandbox")


def test_state_reads_by_key_by_attribute_and_nested() -> None:
    # Given a state with a nested object
    conv = _conversation(support_call_ended())
    # When it is read in the three supported ways
    # Then they agree, and nested objects read the same way
    assert conv.state["sentiment"] == conv.state.sentiment == conv.state.get("sentiment") == "Negative"
    assert isinstance(conv.state.collected, State)
    assert conv.state.collected.card_last4 == "4821"
    assert conv.state.to_dict()["turns"] == 14


def test_a_typo_in_state_attribute_access_fails_loudly_naming_the_key() -> None:
    # Given a conversation
    conv = _conversation(support_call_ended())
    # When the End function reads a key that does not exist as an attribute
    # Then AttributeError names it and suggests .get (instead of writing None to the CRM)
    with pytest.raises(AttributeError, match=r"conv\.state has no key 'sentimnet'.*conv\.state\.get"):
        _ = conv.state.sentimnet


def test_state_is_read_only() -> None:
    # Given a conversation
    conv = _conversation(support_call_ended())
    # When the End function tries to change its state
    # Then it is refused
    with pytest.raises(TypeError, match="read-only"):
        conv.state.sentiment = "Positive"
    with pytest.raises(TypeError):
        conv.state["sentiment"] = "Positive"


def test_the_seed_end_function_plans_a_summary_and_a_ticket_for_support_calls() -> None:
    # Given an inbound call the agent flagged for support
    conv = _conversation(support_call_ended())
    # When the repo's end_function runs
    end_function(conv)
    # Then it planned a summary and a ticket, and nothing ran yet
    assert [action.name for action in conv.actions.planned] == ["crm_summary", "support_ticket"]


def test_the_seed_end_function_plans_a_disposition_for_outbound_calls() -> None:
    # Given an outbound call the prospect asked to be called back on
    conv = _conversation(outbound_call_ended(state={"disposition": "callback_requested"}))
    # When the repo's end_function runs
    end_function(conv)
    # Then it planned a summary and the disposition
    assert [action.name for action in conv.actions.planned] == ["crm_summary", "disposition"]


def test_the_seed_end_function_tells_the_team_about_a_hot_lead() -> None:
    # Given an outbound call whose prospect is interested
    conv = _conversation(outbound_call_ended(state={"disposition": "interested"}))
    # When the repo's end_function runs
    end_function(conv)
    # Then the team is notified besides the summary and the disposition
    assert [action.name for action in conv.actions.planned] == ["crm_summary", "disposition", "notification:team"]


def test_the_seed_end_function_emails_the_information_a_prospect_asked_for() -> None:
    # Given an outbound call whose prospect asked for more information and gave an email
    event = outbound_call_ended(state={"disposition": "info_requested"})
    event["detail"]["customer_email"] = "prospect@example.com"
    conv = _conversation(event)
    # When the repo's end_function runs
    end_function(conv)
    # Then an email follow-up is planned with the disposition
    assert [action.name for action in conv.actions.planned] == ["crm_summary", "disposition", "follow_up:email"]


def test_the_seed_end_function_schedules_a_callback_when_the_agent_asked_for_one() -> None:
    # Given an unresolved support call that needs a callback
    conv = _conversation(support_call_ended(state={"support_needed": False, "follow_up_required": True}))
    # When the repo's end_function runs
    end_function(conv)
    # Then a callback follow-up is planned
    assert [action.name for action in conv.actions.planned] == ["crm_summary", "follow_up:callback"]


def test_the_default_summary_takes_known_state_keys() -> None:
    # Given a support call
    conv = _conversation(support_call_ended())
    # When the default summary is built
    summary = conv.actions.default_summary()
    # Then it holds the call's facts and the summary-worthy state, not everything in state
    assert summary["conversation_id"] == conv.id
    assert summary["last_topic"] == "billing"
    assert summary["intent"] == "billing_dispute"
    assert "collected" not in summary
    assert "issue_description" not in summary


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        pytest.param(lambda a: a.open_ticket("   "), "subject must not be empty", id="empty-subject"),
        pytest.param(lambda a: a.open_ticket("x", priority="CRITICAL"), "priority must be one of", id="bad-priority"),
        pytest.param(lambda a: a.log_disposition("maybe"), "unknown disposition \\(a str of 5", id="bad-disposition"),
        pytest.param(lambda a: a.log_summary({"when": object()}), "must be JSON data", id="summary-not-json"),
    ],
)
def test_planning_a_bad_action_raises_at_once_naming_the_problem(plan: Any, message: str) -> None:
    # Given a conversation
    conv = _conversation(conversation_ended())
    # When the End function plans an action with a bad argument
    # Then ValueError says what is wrong, inside end_function (where the author can see it)
    with pytest.raises(ValueError, match=message):
        plan(conv.actions)
    assert conv.actions.planned == ()


def test_an_action_can_be_planned_only_once() -> None:
    # Given a conversation with a summary planned
    conv = _conversation(conversation_ended())
    conv.actions.log_summary()
    # When the End function plans it again
    # Then it is refused: each action runs once per conversation
    with pytest.raises(ValueError, match="'crm_summary' was already planned"):
        conv.actions.log_summary({"again": True})
