"""The default End function, tested the way a team tests its own: with ``aftercall.testing``.

Each test runs ``end_function`` on a realistic event and asserts on the plan and on the requests
the real HubSpot adapter would send (recorded, nothing leaves the process). docs/actions.md
("Test your End function") shows the same pattern.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from aftercall.testing import run_end_function
from end_function import end_function
from tests.support.events import CUSTOMER_PHONE, outbound_call_ended, support_call_ended


def test_a_support_call_writes_a_summary_note_and_opens_the_ticket_the_agent_asked_for() -> None:
    # Given an inbound call the agent flagged for support, with a subject and a HIGH priority
    event = support_call_ended()
    # When the End function runs on it
    plan = run_end_function(event, end_function)
    # Then it planned a summary and a ticket, and both went through cleanly
    assert plan.names == ("crm_summary", "support_ticket")
    assert plan.ok
    # And the ticket is created in HubSpot with the agent's subject and priority, on the caller's contact
    ticket = plan["support_ticket"]
    assert ticket.arguments.priority == "HIGH"  # type: ignore[attr-defined]
    create = ticket.requests[-1]
    assert (create.method, create.path) == ("POST", "/crm/v3/objects/tickets")
    assert create.body["properties"]["subject"] == "Charged twice for the November invoice"
    assert create.body["properties"]["hs_ticket_priority"] == "HIGH"
    assert create.body["associations"][0]["to"]["id"] == "501"


def test_the_summary_note_carries_topic_sentiment_and_resolution_from_the_agents_state() -> None:
    # Given a support call whose agent stored the topic, sentiment and resolution
    event = support_call_ended()
    # When the End function runs on it
    plan = run_end_function(event, end_function)
    # Then the contact is looked up by the caller's phone and the note carries those fields
    search, create = plan["crm_summary"].requests
    assert search.path == "/crm/v3/objects/contacts/search"
    # (by HubSpot's digits-only calculated property, which matches however the number was typed)
    phones = [
        f["value"]
        for g in search.body["filterGroups"]
        for f in g["filters"]
        if f["propertyName"] == "hs_searchable_calculated_phone_number"
    ]
    assert phones == [CUSTOMER_PHONE.removeprefix("+1")]  # the national number, without country code
    note = create.body["properties"]["hs_note_body"]
    assert "<b>topic</b>: billing" in note
    assert "<b>sentiment</b>: Negative" in note
    assert "<b>resolution</b>: unresolved" in note
    assert f"aftercall-{event['detail']['conversation_id']}" in note  # the marker a retry searches for


def test_a_call_that_needs_no_support_opens_no_ticket() -> None:
    # Given an inbound call the agent resolved
    event = support_call_ended(state={"support_needed": False, "last_topic": "delivery status"})
    # When the End function runs on it
    plan = run_end_function(event, end_function)
    # Then only the summary is written
    assert plan.names == ("crm_summary",)
    assert [r.path for r in plan.requests] == ["/crm/v3/objects/contacts/search", "/crm/v3/objects/notes"]


def test_an_outbound_call_sets_the_leads_status_from_the_disposition() -> None:
    # Given an outbound call the prospect asked to be called back on
    event = outbound_call_ended(state={"disposition": "callback_requested"})
    # When the End function runs on it
    plan = run_end_function(event, end_function)
    # Then the contact's lead status is set to HubSpot's BAD_TIMING
    assert plan.names == ("crm_summary", "disposition")
    patch = plan["disposition"].requests[-1]
    assert patch.method == "PATCH"
    assert patch.path == "/crm/v3/objects/contacts/501"
    assert patch.body == {"properties": {"hs_lead_status": "BAD_TIMING"}}


def test_a_hot_lead_notifies_the_sales_team_with_a_readable_summary() -> None:
    # Given an outbound call whose prospect is interested
    event = outbound_call_ended(state={"disposition": "interested", "last_topic": "premium plan"})
    # When the End function runs on it
    plan = run_end_function(event, end_function)
    # Then the team's SNS topic gets one message naming the lead, the topic and the agent
    (publish,) = plan["notification:team"].aws_calls
    assert (publish.service, publish.operation) == ("sns", "Publish")
    assert publish.params["Subject"] == "Potential lead: interested"
    assert "topic: premium plan" in publish.params["Message"]
    assert f"agent: {event['detail']['agent_id']}" in publish.params["Message"]


def test_a_callback_is_scheduled_for_nine_the_next_morning() -> None:
    # Given a support call that ended yesterday evening and needs a callback
    ended = (datetime.now(UTC) - timedelta(days=1)).replace(hour=18, minute=0, second=0, microsecond=0)
    event = support_call_ended(
        state={"support_needed": False, "follow_up_required": True, "last_topic": "router setup"},
        started_at=(ended - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        ended_at=ended.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    # When the End function runs on it
    plan = run_end_function(event, end_function)
    # Then one Scheduler schedule is created for 09:00 UTC today, deleted after it fires
    (schedule,) = plan["follow_up:callback"].aws_calls
    assert schedule.operation == "CreateSchedule"
    nine = (ended + timedelta(days=1)).replace(hour=9)
    expected = max(nine, datetime.now(UTC) + timedelta(minutes=2))
    scheduled = datetime.fromisoformat(schedule.params["ScheduleExpression"][3:-1]).replace(tzinfo=UTC)
    assert abs(scheduled - expected) < timedelta(seconds=5)
    assert schedule.params["ActionAfterCompletion"] == "DELETE"
    # And it will ask for a callback to the customer about the call's topic
    payload = json.loads(schedule.params["Target"]["Input"])
    assert (payload["kind"], payload["to"], payload["message"]) == (
        "callback",
        CUSTOMER_PHONE,
        "Call back about router setup",
    )


def test_information_requested_on_an_outbound_call_is_emailed_to_the_prospect() -> None:
    # Given an outbound call whose prospect asked for information and gave an email address
    event = outbound_call_ended(state={"disposition": "info_requested"}, customer_email="prospect@example.com")
    # When the End function runs on it
    plan = run_end_function(event, end_function)
    # Then an email follow-up to that address is planned with its subject
    (follow_up,) = plan.follow_ups
    assert (follow_up.kind, follow_up.to, follow_up.subject) == (
        "email",
        "prospect@example.com",
        "The information you asked for",
    )
