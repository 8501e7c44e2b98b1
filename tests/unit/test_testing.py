"""``aftercall.testing``: the same validation as the handler, the real adapters' requests, recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aftercall.conversation import Conversation
from aftercall.errors import FollowUpTimeError, InvalidEventError, UnknownContactError
from aftercall.handler import parse_event
from aftercall.testing import RecordingCrm, run_end_function
from end_function import end_function
from tests.support.events import CUSTOMER_PHONE, DROP, conversation_ended, outbound_call_ended, support_call_ended


def test_an_invalid_event_is_refused_with_the_handlers_own_reason() -> None:
    # Given an event without a conversation id and with a malformed caller number
    event = conversation_ended(conversation_id=DROP, caller="555-CALL-ME")
    with pytest.raises(InvalidEventError) as handler_said:
        parse_event(event, "sandbox")
    # When it is run through aftercall.testing
    with pytest.raises(InvalidEventError) as testing_said:
        run_end_function(event, end_function)
    # Then the reason is word for word the handler's
    assert str(testing_said.value) == str(handler_said.value)
    assert "detail.conversation_id" in str(testing_said.value)
    assert "detail.caller" in str(testing_said.value)


def test_a_bare_detail_is_accepted_as_the_event_it_would_be_sent_in() -> None:
    # Given only the detail of a support call
    detail = support_call_ended()["detail"]
    # When it is run
    plan = run_end_function(detail, end_function)
    # Then it is planned as the full event would be
    assert plan.conversation_id == detail["conversation_id"]
    assert plan.names == ("crm_summary", "support_ticket")


def test_an_error_in_the_end_function_reaches_the_test_unchanged() -> None:
    # Given an End function with a bug
    def buggy(conv: Conversation) -> None:
        conv.actions.log_summary({"topic": conv.state.topic})  # no such key: AttributeError

    # When it runs, Then the test sees the function's own error
    with pytest.raises(AttributeError, match=r"conv\.state has no key .topic."):
        run_end_function(support_call_ended(), buggy)


def test_a_customer_the_crm_does_not_know_fails_that_action_as_in_production() -> None:
    # Given a CRM that knows no contact for the caller
    crm = RecordingCrm(known_customer=False)
    # When the End function runs
    plan = run_end_function(support_call_ended(), end_function, crm=crm)
    # Then each CRM action fails with the adapter's reason, and nothing was created
    assert not plan.ok
    assert isinstance(plan["crm_summary"].error, UnknownContactError)
    assert [r.path for r in crm.requests] == ["/crm/v3/objects/contacts/search"] * 2


def test_a_follow_up_due_long_ago_fails_with_the_schedulers_reason() -> None:
    # Given an End function that schedules a follow-up an hour in the past
    def late(conv: Conversation) -> None:
        conv.actions.schedule_follow_up(datetime.now(UTC) - timedelta(hours=1), "Too late", kind="sms")

    # When it runs
    plan = run_end_function(support_call_ended(), late)
    # Then the follow-up fails the way the handler would report it, and no schedule is created
    assert isinstance(plan["follow_up:sms"].error, FollowUpTimeError)
    assert plan["follow_up:sms"].aws_calls == ()


def test_perform_false_only_plans() -> None:
    # Given a support call, When it is only planned
    plan = run_end_function(support_call_ended(), end_function, perform=False)
    # Then the actions are listed with their arguments but no request was made
    assert plan.names == ("crm_summary", "support_ticket")
    assert plan.requests == ()
    assert plan["support_ticket"].arguments.subject == "Charged twice for the November invoice"  # type: ignore[attr-defined]


def test_the_shown_form_masks_phone_numbers_and_emails() -> None:
    # Given an outbound call to a prospect with an email address
    event = outbound_call_ended(state={"disposition": "info_requested"}, customer_email="prospect@example.com")
    plan = run_end_function(event, end_function)
    # When the plan is turned into what `aftercall try` shows
    shown = json.dumps(plan.to_json())
    # Then neither the number nor the address appears, while the raw plan keeps them for assertions
    callee = event["detail"]["callee"]
    assert callee not in shown
    assert "prospect@example.com" not in shown
    assert callee[:4] in shown
    assert "p***@example.com" in shown
    assert plan.follow_ups[0].to == "prospect@example.com"


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        (
            "salesforce",
            [
                "POST /services/oauth2/token",
                "GET /services/data/v62.0/search/",
                "PATCH /services/data/v62.0/sobjects/Case/Aftercall_Conversation_Id__c/{id}",
            ],
        ),
        ("zendesk", ["GET /api/v2/search.json", "POST /api/v2/tickets"]),
        ("webhook", ["POST /aftercall"]),
    ],
)
def test_every_crm_adapter_sends_its_real_requests(provider: str, expected: list[str]) -> None:
    # Given a support call and a recording CRM of that provider
    event = support_call_ended()
    crm = RecordingCrm(provider)
    # When the End function runs
    plan = run_end_function(event, end_function, crm=crm)
    # Then the adapter made its own requests, the ticket's create last
    assert plan.ok
    wanted = [e.format(id=event["detail"]["conversation_id"]) for e in expected]
    made = [f"{r.method} {r.path}" for r in crm.requests]
    assert set(wanted) <= set(made)
    last = plan["support_ticket"].requests[-1]
    assert f"{last.method} {last.path}" == wanted[-1]
    # And the caller was looked up by their number where the CRM searches
    if provider == "zendesk":
        national = CUSTOMER_PHONE.removeprefix("+1")
        assert crm.requests[0].query == {"query": f"type:user role:end-user phone:*{national}"}


def test_the_example_in_docs_actions_md_runs_and_passes() -> None:
    # Given the copy-paste example of "Test your End function"
    text = (Path(__file__).resolve().parents[2] / "docs" / "actions.md").read_text(encoding="utf-8")
    example = text.split("## Test your End function", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(example, "docs/actions.md", "exec"), namespace)  # noqa: S102 - our own documentation
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    # When each of its tests runs, Then it passes
    assert len(tests) == 2
    for test in tests:
        test()
