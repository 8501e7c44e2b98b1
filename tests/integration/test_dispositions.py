"""Outbound dispositions end to end: "update the lead status in your CRM and queue a follow-up
email if the prospect requested more information" (the platform docs' use case), with an End
function that does exactly that, the fake HubSpot, moto's Scheduler and the FollowUp function.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from aftercall.conversation import Conversation
from aftercall.errors import ActionsFailedError, EndFunctionError, UnknownContactError
from tests.support.events import CUSTOMER_EMAIL, outbound_call_ended
from tests.support.lambda_context import lambda_context
from tests.support.peers import FollowUpPeers, emails_sent, follow_up_app, follow_up_environment, unique_phone
from tests.support.stack import HandlerPeers

CONTACT = "/crm/v3/objects/contacts/"
INFO_EMAIL = "Thanks for your time today. Here is the pricing sheet and the case study you asked for."


def end_function(conv: Conversation) -> None:
    """Update the lead status; queue a follow-up email an hour later if they asked for information."""
    disposition = conv.state.get("disposition", "connected")
    conv.actions.log_disposition(disposition)
    if disposition == "info_requested" and conv.customer_email:
        conv.actions.schedule_follow_up(
            conv.ended_at + timedelta(hours=1), INFO_EMAIL, kind="email", subject="The information you asked for"
        )


@pytest.fixture
def peers(moto_endpoint: str) -> Iterator[FollowUpPeers]:
    made = FollowUpPeers.create()
    yield made
    made.delete()


def _info_requested(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "state": {"campaign": "renewal-2026-q4", "disposition": "info_requested", "sentiment": "Positive"},
        "customer_email": CUSTOMER_EMAIL,
    }
    return outbound_call_ended(**{**fields, **overrides})


def _lead_status(stack: HandlerPeers) -> str:
    contact = stack.crm.contact(stack.contact_id)
    assert contact is not None
    return str(contact["properties"]["hs_lead_status"])


def test_a_prospect_who_asked_for_information_is_updated_and_gets_one_email_later(
    stack: HandlerPeers, peers: FollowUpPeers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an outbound call whose prospect asked for more information, and left their email
    event = _info_requested()
    ended_at = datetime.fromisoformat(event["detail"]["ended_at"].replace("Z", "+00:00"))
    # When the handler processes it
    report = stack.runtime(**peers.settings()).handle(event, lambda_context(), end_function)
    # Then the lead's status in the CRM says so ...
    assert _lead_status(stack) == "IN_PROGRESS"
    assert report["actions"]["disposition"]["result"] == {
        "kind": "contact",
        "object_id": stack.contact_id,
        "hs_lead_status": "IN_PROGRESS",
    }
    # ... and one email follow-up is scheduled an hour after the call, to the prospect
    (schedule,) = peers.schedules()
    assert schedule["ScheduleExpression"] == f"at({ended_at + timedelta(hours=1):%Y-%m-%dT%H:%M:%S})"
    payload = json.loads(schedule["Target"]["Input"])
    assert (payload["kind"], payload["to"], payload["message"]) == ("email", CUSTOMER_EMAIL, INFO_EMAIL)
    # When the schedule fires and the FollowUp function sends it
    app = follow_up_app()
    for name, value in follow_up_environment(stack.table, peers).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(app, "_sender", None)
    app.lambda_handler(peers.fire(schedule), lambda_context())
    # Then the prospect received exactly one email with the information
    (email,) = emails_sent(peers.from_email)
    assert email["destinations"]["ToAddresses"] == [CUSTOMER_EMAIL]
    assert email["subject"] == "The information you asked for"
    assert email["body"] == INFO_EMAIL


@pytest.mark.parametrize(
    ("disposition", "lead_status"),
    [("not_interested", "UNQUALIFIED"), ("meeting_booked", "OPEN_DEAL"), ("no_answer", "ATTEMPTED_TO_CONTACT")],
)
def test_other_outcomes_update_the_lead_and_send_nothing(
    stack: HandlerPeers, peers: FollowUpPeers, disposition: str, lead_status: str
) -> None:
    # Given an outbound call with another outcome
    event = _info_requested(state={"disposition": disposition})
    # When the handler processes it
    stack.runtime(**peers.settings()).handle(event, lambda_context(), end_function)
    # Then the lead status reflects it and no follow-up is scheduled
    assert _lead_status(stack) == lead_status
    assert peers.schedules() == []


def test_a_prospect_without_an_email_is_updated_and_no_email_is_queued(
    stack: HandlerPeers, peers: FollowUpPeers
) -> None:
    # Given a prospect who asked for information but left no email
    event = outbound_call_ended(state={"disposition": "info_requested"})
    # When the handler processes it
    report = stack.runtime(**peers.settings()).handle(event, lambda_context(), end_function)
    # Then the lead is updated and nothing is scheduled
    assert _lead_status(stack) == "IN_PROGRESS"
    assert set(report["actions"]) == {"disposition"}
    assert peers.schedules() == []


def test_a_failed_lead_update_is_retried_alone_and_the_email_stays_queued_once(
    stack: HandlerPeers, peers: FollowUpPeers
) -> None:
    # Given the CRM refuses the first lead update
    stack.crm.add_fault("status", method="PATCH", path=CONTACT, status=400, times=1)
    event = _info_requested()
    runtime = stack.runtime(**peers.settings())
    # When the handler processes the call, and Lambda retries it
    with pytest.raises(ActionsFailedError) as raised:
        runtime.handle(event, lambda_context(), end_function)
    status_after_failure = _lead_status(stack)
    retry = runtime.handle(event, lambda_context(), end_function)
    # Then the first attempt failed for the update alone, and the retry updated the lead without
    # scheduling the email again
    assert set(raised.value.failures) == {"disposition"}
    assert status_after_failure == "NEW"
    assert _lead_status(stack) == "IN_PROGRESS"
    assert retry["actions"]["disposition"]["status"] == "done"
    assert retry["actions"]["follow_up:email"]["status"] == "already_done"
    assert len(peers.schedules()) == 1


def test_an_unknown_prospect_fails_the_update_naming_no_number_while_the_email_is_queued(
    stack: HandlerPeers, peers: FollowUpPeers
) -> None:
    # Given an outbound call to a number (and an email) the CRM has no contact for, and
    # UnknownCallerPolicy=park
    phone = unique_phone()
    event = _info_requested(callee=phone, customer_email="someone.else@example.com")
    # When the handler processes it
    with pytest.raises(ActionsFailedError) as raised:
        stack.runtime(unknown_caller_policy="park", **peers.settings()).handle(event, lambda_context(), end_function)
    # Then the update failed with UnknownContactError, masking the number, and the email was still
    # queued (the two are independent)
    error = raised.value.failures["disposition"]
    assert isinstance(error, UnknownContactError)
    assert phone not in str(error)
    assert set(raised.value.failures) == {"disposition"}
    (schedule,) = peers.schedules()
    assert json.loads(schedule["Target"]["Input"])["to"] == "someone.else@example.com"


def test_an_unknown_disposition_is_refused_when_planned(stack: HandlerPeers, peers: FollowUpPeers) -> None:
    # Given an outbound call whose state carries a disposition the runtime does not know
    event = _info_requested(state={"disposition": "maybe_later"})
    # When the handler processes it
    with pytest.raises(EndFunctionError) as raised:
        stack.runtime(**peers.settings()).handle(event, lambda_context(), end_function)
    # Then the End function's call raised a ValueError listing the known ones, not quoting the value
    # (it may be personal data); nothing was done
    assert isinstance(raised.value.__cause__, ValueError)
    assert "unknown disposition" in str(raised.value.__cause__)
    assert "maybe_later" not in str(raised.value.__cause__)
    assert "info_requested" in str(raised.value.__cause__)
    assert stack.crm.requests_to("PATCH") == []
    assert peers.schedules() == []
