"""Follow-ups end to end: the End handler schedules them on EventBridge Scheduler (moto server), the
schedule is read back (moto never fires it), and the FollowUp function is invoked with exactly the
payload the schedule carries, sending through SNS (SMS), SES (email) or the event bus (callback).

The End functions here are user code; the runtime, the scheduler, the sender and the FollowUp
Lambda entry point are the real ones, talking to real protocol peers.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from aftercall import aws
from aftercall.actions import ActionPlan
from aftercall.conversation import Conversation
from aftercall.crm.base import CrmCall
from aftercall.deadline import Deadline
from aftercall.errors import (
    ActionInProgressError,
    ActionsFailedError,
    ConfigurationError,
    EndFunctionError,
    FollowUpPayloadError,
    FollowUpTimeError,
)
from aftercall.follow_ups.schedule import schedule_name
from aftercall.follow_ups.send import CALLBACK_DETAIL_TYPE, FOLLOW_UP_SOURCE
from aftercall.handler import parse_event
from aftercall.ledger import COMPLETED, FAILED, RECORD_IN_PROGRESS, record_key
from aftercall.privacy import mask_email, mask_phone
from tests.support.events import DROP, conversation_ended, re_emitted
from tests.support.lambda_context import lambda_context
from tests.support.peers import (
    FollowUpPeers,
    capture_logs,
    emails_sent,
    follow_up_app,
    follow_up_environment,
    sms_sent,
    unique_email,
    unique_phone,
)
from tests.support.stack import HandlerPeers

Invoke = Callable[[Any], dict[str, Any]]
EndFunction = Callable[[Conversation], None]
AT_EXPRESSION = re.compile(r"^at\((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\)$")
TICKET_CREATE = "/crm/v3/objects/tickets$"


@pytest.fixture
def peers(moto_endpoint: str) -> Iterator[FollowUpPeers]:
    made = FollowUpPeers.create()
    yield made
    made.delete()


@pytest.fixture
def follow_up_function(stack: HandlerPeers, peers: FollowUpPeers, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """The FollowUp Lambda entry point, cold-started with this test's environment."""
    app = follow_up_app()
    for name, value in follow_up_environment(stack.table, peers).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(app, "_sender", None)  # a new execution environment: reads the environment again

    def invoke(payload: Any) -> dict[str, Any]:
        result: dict[str, Any] = app.lambda_handler(payload, lambda_context())
        return result

    return invoke


def _conversation_id(event: dict[str, Any]) -> str:
    return str(event["detail"]["conversation_id"])


def _expression_time(schedule: dict[str, Any]) -> datetime:
    match = AT_EXPRESSION.match(schedule["ScheduleExpression"])
    assert match, schedule["ScheduleExpression"]
    return datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC)


def _plans_follow_up(at: datetime | str, message: str, kind: str = "sms", **options: Any) -> EndFunction:
    def end_function(conv: Conversation) -> None:
        conv.actions.schedule_follow_up(at, message, kind, **options)  # type: ignore[arg-type]

    return end_function


def _in_two_days_in_paris() -> datetime:
    """A follow-up time given in a non-UTC zone (UTC+01:00), whole seconds."""
    when = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    return when.astimezone(timezone(timedelta(hours=1)))


# --- scheduling: the happy path per kind ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sms", "email", "callback"])
def test_a_follow_up_is_one_schedule_at_its_time_in_utc_carrying_the_payload(
    stack: HandlerPeers, peers: FollowUpPeers, kind: str
) -> None:
    # Given a call from a customer with a phone and an email, and an End function that plans a follow-up
    # two days ahead, the time given in UTC+01:00
    phone, email = unique_phone(), unique_email()
    event = conversation_ended(caller=phone, customer_email=email)
    conversation_id = _conversation_id(event)
    when = _in_two_days_in_paris()
    subject = "Your quote" if kind == "email" else None
    end_function = _plans_follow_up(when.isoformat(), "  Here is the quote we discussed.  ", kind, subject=subject)
    # When the handler processes the call
    report = stack.runtime(**peers.settings()).handle(event, lambda_context(), end_function)
    # Then exactly one schedule exists, named after the conversation, due at that time in UTC
    (schedule,) = peers.schedules()
    assert schedule["Name"] == schedule_name(conversation_id, kind)
    assert conversation_id in schedule["Name"]
    assert re.fullmatch(r"[0-9A-Za-z\-_.]{1,64}", schedule["Name"])
    assert schedule["ScheduleExpression"] == f"at({when.astimezone(UTC):%Y-%m-%dT%H:%M:%S})"
    assert schedule["ScheduleExpressionTimezone"] == "UTC"
    # ... a one-time schedule that deletes itself after firing, at an exact time ...
    assert schedule["ActionAfterCompletion"] == "DELETE"
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert schedule["GroupName"] == peers.group
    # ... aimed at the FollowUp function through the scheduler role, failures kept in their queue ...
    target = schedule["Target"]
    assert target["Arn"] == peers.target_arn
    assert target["RoleArn"] == peers.role_arn
    assert target["DeadLetterConfig"] == {"Arn": peers.failed_follow_ups_arn}
    # ... carrying the payload the FollowUp function expects
    recipient = email if kind == "email" else phone
    assert json.loads(target["Input"]) == {
        "aftercall": "follow-up",
        "version": "1",
        "conversation_id": conversation_id,
        "environment": "sandbox",
        "key": kind,
        "kind": kind,
        "to": recipient,
        "message": "Here is the quote we discussed.",
        "subject": subject,
        "scheduled_for": when.astimezone(UTC).isoformat(),
    }
    # And the report and the ledger record the schedule
    outcome = report["actions"][f"follow_up:{kind}"]
    assert outcome["status"] == "done"
    assert outcome["result"]["schedule"] == schedule["Name"]
    assert outcome["result"]["sent_now"] is False
    item = stack.ledger().lookup(conversation_id, f"follow_up:{kind}")
    assert item is not None
    assert item["status"] == COMPLETED


def test_two_follow_ups_of_one_kind_are_told_apart_by_their_key(stack: HandlerPeers, peers: FollowUpPeers) -> None:
    # Given an End function that plans a reminder tomorrow and a check-in next week, both SMS
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    next_week = datetime.now(UTC) + timedelta(days=7)

    def end_function(conv: Conversation) -> None:
        conv.actions.schedule_follow_up(tomorrow, "Reminder: your appointment is tomorrow.", key="reminder")
        conv.actions.schedule_follow_up(next_week, "How did your appointment go?", key="check-in")

    event = conversation_ended(caller=unique_phone())
    # When the handler processes the call
    report = stack.runtime(**peers.settings()).handle(event, lambda_context(), end_function)
    # Then there are two schedules, one per key, each carrying its own message
    schedules = {json.loads(s["Target"]["Input"])["key"]: s for s in peers.schedules()}
    assert set(schedules) == {"reminder", "check-in"}
    assert json.loads(schedules["check-in"]["Target"]["Input"])["message"] == "How did your appointment go?"
    assert set(report["actions"]) == {"follow_up:reminder", "follow_up:check-in"}


# --- scheduling: retries never make a second schedule -----------------------------------------------


def test_a_retry_after_the_schedule_was_made_but_not_recorded_finds_it(
    stack: HandlerPeers, peers: FollowUpPeers
) -> None:
    # Given an invocation that took the conversation, created the follow-up's schedule and then timed
    # out before recording it in the ledger (its lease ran out with it)
    event = conversation_ended(caller=unique_phone())
    conversation_id = _conversation_id(event)
    end_function = _plans_follow_up(datetime.now(UTC) + timedelta(days=1), "We'll call you back tomorrow.")
    runtime = stack.runtime(**peers.settings())
    plan = ActionPlan(parse_event(event, "sandbox"), runtime.crm, runtime.follow_ups, runtime.notifier)
    end_function(Conversation(parse_event(event, "sandbox"), plan))
    (action,) = plan.planned
    timed_out = Deadline.after(-1)
    aws.client("dynamodb").put_item(  # the conversation's idempotency record, left in progress by it
        TableName=stack.table,
        Item={
            "id": {"S": record_key(conversation_id)},
            "status": {"S": RECORD_IN_PROGRESS},
            "in_progress_expiration": {"N": str(timed_out.epoch_ms)},
            "expiration": {"N": str(int(time.time()) + 3600)},
        },
    )
    action.perform(CrmCall(deadline=timed_out))
    (first,) = peers.schedules()
    # When Lambda retries the event
    report = runtime.handle(event, lambda_context(), end_function)
    # Then the retry found the schedule the first attempt made: still one, unchanged, now recorded
    assert peers.schedules() == [first]
    outcome = report["actions"]["follow_up:sms"]
    assert outcome["status"] == "done"
    assert outcome["result"]["schedule"] == first["Name"]
    assert outcome["result"]["existing"] is True
    item = stack.ledger().lookup(conversation_id, "follow_up:sms")
    assert item is not None
    assert item["status"] == COMPLETED


def test_a_re_emitted_conversation_makes_no_second_schedule(stack: HandlerPeers, peers: FollowUpPeers) -> None:
    # Given a conversation whose follow-up was scheduled
    event = conversation_ended(caller=unique_phone())
    end_function = _plans_follow_up(datetime.now(UTC) + timedelta(hours=3), "Your order ships today.")
    stack.runtime(**peers.settings()).handle(event, lambda_context(), end_function)
    (first,) = peers.schedules()
    # When the platform emits the conversation again and a cold process handles it
    report = stack.runtime(**peers.settings()).handle(re_emitted(event), lambda_context(), end_function)
    # Then it is a duplicate and the one schedule is untouched
    assert report["duplicate"] is True
    assert peers.schedules() == [first]


def test_a_retry_after_another_action_failed_does_not_schedule_again(stack: HandlerPeers, peers: FollowUpPeers) -> None:
    # Given the CRM refuses the ticket once, and an End function that plans a ticket and a follow-up
    stack.crm.add_fault("status", method="POST", path=TICKET_CREATE, status=400, times=1)

    def end_function(conv: Conversation) -> None:
        conv.actions.open_ticket("Refund request", "Charged twice")
        conv.actions.schedule_follow_up(datetime.now(UTC) + timedelta(days=1), "We're on it.")

    event = conversation_ended()
    runtime = stack.runtime(**peers.settings())
    with pytest.raises(ActionsFailedError) as raised:
        runtime.handle(event, lambda_context(), end_function)
    (first,) = peers.schedules()
    # When Lambda retries the event
    report = runtime.handle(event, lambda_context(), end_function)
    # Then only the ticket was performed again; the follow-up was already done: one schedule
    assert set(raised.value.failures) == {"support_ticket"}
    assert report["actions"]["support_ticket"]["status"] == "done"
    assert report["actions"]["follow_up:sms"]["status"] == "already_done"
    assert peers.schedules() == [first]


# --- scheduling: bad input ------------------------------------------------------------------------


def test_a_time_just_past_is_sent_now_one_minute_ahead(stack: HandlerPeers, peers: FollowUpPeers) -> None:
    # Given a follow-up due five minutes ago (within the send-now grace)
    event = conversation_ended(caller=unique_phone())
    end_function = _plans_follow_up(datetime.now(UTC) - timedelta(minutes=5), "Thanks for calling!")
    # When the handler processes the call
    before = datetime.now(UTC)
    report = stack.runtime(**peers.settings()).handle(event, lambda_context(), end_function)
    after = datetime.now(UTC)
    # Then it is scheduled one minute after it was handled ("send now"), and reported as such
    (schedule,) = peers.schedules()
    due = _expression_time(schedule)
    assert (before + timedelta(minutes=1)).replace(microsecond=0) <= due <= after + timedelta(minutes=1)
    assert report["actions"]["follow_up:sms"]["result"]["sent_now"] is True


def test_a_time_past_the_grace_fails_that_action_naming_the_time(stack: HandlerPeers, peers: FollowUpPeers) -> None:
    # Given an End function that logs a summary and plans an SMS that was due two hours ago
    due = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)

    def end_function(conv: Conversation) -> None:
        conv.actions.log_summary()
        conv.actions.schedule_follow_up(due, "See you tomorrow!")

    event = conversation_ended()
    # When the handler processes the call
    with pytest.raises(ActionsFailedError) as raised:
        stack.runtime(**peers.settings()).handle(event, lambda_context(), end_function)
    # Then the follow-up failed with a time error naming the time, nothing was scheduled ...
    error = raised.value.failures["follow_up:sms"]
    assert isinstance(error, FollowUpTimeError)
    assert due.isoformat() in str(error)
    assert "not sent" in str(error)
    assert peers.schedules() == []
    # ... and the summary was written all the same
    assert set(raised.value.failures) == {"follow_up:sms"}
    assert len(stack.notes_for(_conversation_id(event))) == 1


@pytest.mark.parametrize(
    ("at", "reason"),
    [
        ("next tuesday at 5", "is not an ISO 8601 date-time"),
        ("2026-13-45T25:00:00+00:00", "is not an ISO 8601 date-time"),
        ("2030-01-02T10:00:00", "has no time zone"),
        (datetime(2030, 1, 2, 10, 0), "has no time zone"),  # the naive time under test
        ((datetime.now(UTC) + timedelta(days=400)).isoformat(), "more than 365 days ahead"),
        (1767225600, "must be a datetime or ISO 8601 string"),
    ],
    ids=["words", "impossible-date", "naive-string", "naive-datetime", "over-a-year", "epoch-number"],
)
def test_a_bad_time_is_refused_when_planned(stack: HandlerPeers, peers: FollowUpPeers, at: Any, reason: str) -> None:
    # Given an End function that plans a follow-up at a time that cannot be scheduled
    end_function = _plans_follow_up(at, "Hello again")
    # When the handler processes the call
    with pytest.raises(EndFunctionError) as raised:
        stack.runtime(**peers.settings()).handle(conversation_ended(), lambda_context(), end_function)
    # Then the End function's call raised a ValueError saying what is wrong, and nothing was scheduled
    cause = raised.value.__cause__
    assert isinstance(cause, ValueError)
    assert reason in str(cause)
    assert peers.schedules() == []


@pytest.mark.parametrize(
    ("kind", "missing", "event_overrides"),
    [
        ("sms", "phone number", {"caller": DROP}),
        ("callback", "phone number", {"caller": DROP}),
        ("email", "email address", {"customer_email": DROP}),
    ],
)
def test_a_follow_up_without_a_recipient_is_refused_naming_what_is_missing(
    stack: HandlerPeers, peers: FollowUpPeers, kind: str, missing: str, event_overrides: dict[str, Any]
) -> None:
    # Given a conversation without the customer's phone (or email), and an End function that plans
    # a follow-up of that kind without saying where to
    end_function = _plans_follow_up(datetime.now(UTC) + timedelta(days=1), "Hello again", kind)
    event = conversation_ended(**event_overrides)
    # When the handler processes the call
    with pytest.raises(EndFunctionError) as raised:
        stack.runtime(**peers.settings()).handle(event, lambda_context(), end_function)
    # Then a ValueError names what is missing and how to give it, and nothing was scheduled
    cause = raised.value.__cause__
    assert isinstance(cause, ValueError)
    assert f"no customer {missing}" in str(cause)
    assert "to=" in str(cause)
    assert peers.schedules() == []


@pytest.mark.parametrize(
    ("kind", "options", "reason"),
    [
        ("sms", {"to": "555-0100"}, "to= must be an E.164 phone number"),
        ("callback", {"to": "call me maybe"}, "to= must be an E.164 phone number"),
        ("email", {"to": "jane at example"}, "to= must be an email address"),
        ("sms", {"key": "k" * 65}, "key"),
    ],
    ids=["sms-not-e164", "callback-not-a-number", "email-not-an-address", "key-too-long"],
)
def test_a_follow_up_the_target_could_not_send_is_refused_when_planned(
    stack: HandlerPeers, peers: FollowUpPeers, kind: str, options: dict[str, Any], reason: str
) -> None:
    # Given an End function that plans a follow-up whose recipient or key the FollowUp function
    # would refuse when it comes due (hours or days later, after the call was reported done)
    end_function = _plans_follow_up(datetime.now(UTC) + timedelta(days=1), "Hello again", kind, **options)
    # When the handler processes the call
    with pytest.raises(EndFunctionError) as raised:
        stack.runtime(**peers.settings()).handle(conversation_ended(), lambda_context(), end_function)
    # Then the End function's call raised a ValueError naming the problem, without echoing the value,
    # and nothing was scheduled
    cause = raised.value.__cause__
    assert isinstance(cause, ValueError)
    assert reason in str(cause)
    assert options.get("to", "@@") not in str(cause)
    assert peers.schedules() == []


def test_a_long_subject_is_shortened_to_what_the_target_accepts(
    stack: HandlerPeers, peers: FollowUpPeers, follow_up_function: Invoke
) -> None:
    # Given an email follow-up with a 300-character subject
    address = unique_email()
    subject = "Your quote " + "x" * 289
    payload = _scheduled_payload(stack, peers, conversation_ended(customer_email=address), "email", subject=subject)
    # When it comes due
    result = follow_up_function(payload)
    # Then the email was sent, its subject cut to the 200 characters the target accepts
    assert result["status"] == "sent"
    (email,) = emails_sent(peers.from_email)
    assert email["subject"] == subject[:200]


def test_an_explicit_recipient_is_used_when_the_conversation_has_none(
    stack: HandlerPeers, peers: FollowUpPeers
) -> None:
    # Given a chat without an email, and an End function that names the address the customer gave
    address = unique_email()
    end_function = _plans_follow_up(
        datetime.now(UTC) + timedelta(days=1), "The brochure you asked for", "email", to=address
    )
    # When the handler processes it
    stack.runtime(**peers.settings()).handle(conversation_ended(customer_email=DROP), lambda_context(), end_function)
    # Then the schedule carries that address
    (schedule,) = peers.schedules()
    assert json.loads(schedule["Target"]["Input"])["to"] == address


def test_follow_ups_without_scheduler_settings_fail_that_action_as_a_configuration_error(stack: HandlerPeers) -> None:
    # Given a runtime without the follow-up settings (the template always sets them)
    end_function = _plans_follow_up(datetime.now(UTC) + timedelta(days=1), "Hello again")
    # When the handler processes a call that plans a follow-up
    with pytest.raises(ActionsFailedError) as raised:
        stack.runtime().handle(conversation_ended(), lambda_context(), end_function)
    # Then the action failed naming the missing settings
    error = raised.value.failures["follow_up:sms"]
    assert isinstance(error, ConfigurationError)
    assert "FOLLOW_UP_SCHEDULE_GROUP" in str(error)


# --- the FollowUp function: invoked with exactly what the schedule carries --------------------------


def _scheduled_payload(
    stack: HandlerPeers, peers: FollowUpPeers, event: dict[str, Any], kind: str, **options: Any
) -> dict[str, Any]:
    """Process ``event`` with an End function that plans one follow-up; then fire its schedule."""
    end_function = _plans_follow_up(
        datetime.now(UTC) + timedelta(hours=1), "Your table for two is booked for 8pm.", kind, **options
    )
    stack.runtime(**peers.settings()).handle(event, lambda_context(), end_function)
    (schedule,) = peers.schedules()
    return peers.fire(schedule)


def test_an_sms_follow_up_is_published_to_the_phone_once(
    stack: HandlerPeers, peers: FollowUpPeers, follow_up_function: Invoke
) -> None:
    # Given a due SMS follow-up, its payload taken from the schedule
    phone = unique_phone()
    payload = _scheduled_payload(stack, peers, conversation_ended(caller=phone), "sms")
    # When Scheduler invokes the FollowUp function with it
    result = follow_up_function(payload)
    # Then SNS sent exactly one SMS to that phone, with the message
    (sms,) = sms_sent(phone)
    assert sms["message"] == "Your table for two is booked for 8pm."
    assert result == {"status": "sent", "kind": "sms", "to": mask_phone(phone), "message_id": sms["message_id"]}


def test_an_email_follow_up_is_sent_once_from_the_verified_sender(
    stack: HandlerPeers, peers: FollowUpPeers, follow_up_function: Invoke
) -> None:
    # Given a due email follow-up with a subject, its payload taken from the schedule
    address = unique_email()
    payload = _scheduled_payload(
        stack, peers, conversation_ended(customer_email=address), "email", subject="Your booking"
    )
    # When Scheduler invokes the FollowUp function with it
    result = follow_up_function(payload)
    # Then SES sent exactly one email from the configured (verified) sender to the customer
    (email,) = emails_sent(peers.from_email)
    assert email["destinations"]["ToAddresses"] == [address]
    assert email["subject"] == "Your booking"
    assert email["body"] == "Your table for two is booked for 8pm."
    assert result == {"status": "sent", "kind": "email", "to": mask_email(address), "message_id": email["id"]}


def test_a_callback_follow_up_puts_one_callback_requested_event_on_the_bus(
    stack: HandlerPeers, peers: FollowUpPeers, follow_up_function: Invoke
) -> None:
    # Given a due callback follow-up, its payload taken from the schedule
    phone = unique_phone()
    event = conversation_ended(caller=phone)
    payload = _scheduled_payload(stack, peers, event, "callback")
    # When Scheduler invokes the FollowUp function with it
    result = follow_up_function(payload)
    # Then a rule on the bus delivered exactly one Callback Requested event with the phone to call
    (callback,) = peers.callback_events()
    assert callback["source"] == FOLLOW_UP_SOURCE
    assert callback["detail-type"] == CALLBACK_DETAIL_TYPE
    assert callback["detail"] == {
        "conversation_id": _conversation_id(event),
        "environment": "sandbox",
        "phone": phone,
        "reason": "Your table for two is booked for 8pm.",
    }
    assert result["status"] == "sent"
    assert result["kind"] == "callback"


@pytest.mark.parametrize("kind", ["sms", "email", "callback"])
def test_the_same_payload_delivered_twice_is_sent_once(
    stack: HandlerPeers, peers: FollowUpPeers, follow_up_function: Invoke, kind: str
) -> None:
    # Given a due follow-up that was delivered and sent
    phone, address = unique_phone(), unique_email()
    payload = _scheduled_payload(stack, peers, conversation_ended(caller=phone, customer_email=address), kind)
    first = follow_up_function(payload)
    # When Scheduler delivers the same payload again (it is at-least-once), to a cold process
    setattr(follow_up_app(), "_sender", None)  # noqa: B010 - a cold start: no warm sender
    second = follow_up_function(payload)
    # Then nothing is sent again, and the second answer says so with the first one's result
    sent = {"sms": lambda: sms_sent(phone), "email": lambda: emails_sent(peers.from_email), "callback": None}[kind]
    if sent is not None:
        assert len(sent()) == 1
    else:
        assert len(peers.callback_events()) == 1
    assert second == {**first, "status": "already_sent"}


def test_a_delivery_while_another_is_sending_sends_nothing_and_asks_for_a_retry(
    stack: HandlerPeers, peers: FollowUpPeers, follow_up_function: Invoke
) -> None:
    # Given a due SMS whose send another live invocation holds right now
    phone = unique_phone()
    payload = _scheduled_payload(stack, peers, conversation_ended(caller=phone), "sms")
    stack.ledger().claim(payload["conversation_id"], "follow_up_sent:sms", Deadline.after(30))
    # When a second delivery of the payload arrives
    with pytest.raises(ActionInProgressError):
        follow_up_function(payload)
    # Then it sent nothing (Lambda retries it; the holder sends)
    assert sms_sent(phone) == []


def test_an_email_refused_by_ses_is_sent_once_on_a_later_delivery(
    stack: HandlerPeers, peers: FollowUpPeers, follow_up_function: Invoke
) -> None:
    # Given a due email whose sender SES does not (yet) accept
    address = unique_email()
    payload = _scheduled_payload(stack, peers, conversation_ended(customer_email=address), "email")
    aws.client("sesv2").delete_email_identity(EmailIdentity=peers.from_email)
    with pytest.raises(Exception, match="not verified") as refused:
        follow_up_function(payload)
    failed = stack.ledger().lookup(payload["conversation_id"], "follow_up_sent:email")
    # When the sender is verified and Lambda delivers the payload again
    aws.client("sesv2").create_email_identity(EmailIdentity=peers.from_email)
    result = follow_up_function(payload)
    # Then the refusal was recorded as a failure and the retry sent exactly one email
    assert type(refused.value).__name__ == "MessageRejected"
    assert failed is not None
    assert failed["status"] == FAILED
    assert result["status"] == "sent"
    assert len(emails_sent(peers.from_email)) == 1


def test_email_follow_ups_without_a_sender_fail_as_a_configuration_error(
    stack: HandlerPeers, peers: FollowUpPeers, follow_up_function: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a FollowUp function deployed without FollowUpFromEmail
    address = unique_email()
    payload = _scheduled_payload(stack, peers, conversation_ended(customer_email=address), "email")
    monkeypatch.delenv("FOLLOW_UP_FROM_EMAIL")
    monkeypatch.setattr(follow_up_app(), "_sender", None)
    # When an email follow-up is due
    with pytest.raises(ConfigurationError, match="FOLLOW_UP_FROM_EMAIL"):
        follow_up_function(payload)
    # Then nothing was sent
    assert emails_sent(peers.from_email) == []


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ({"hello": "world"}, "aftercall"),
        (conversation_ended(), "aftercall"),
        ("not even an object", "payload"),
        (
            {
                "aftercall": "follow-up",
                "version": "1",
                "conversation_id": "c-1",
                "environment": "sandbox",
                "key": "sms",
                "kind": "fax",
                "to": "+14155550123",
                "message": "hi",
                "subject": None,
                "scheduled_for": "2026-11-25T10:00:00+00:00",
            },
            "kind",
        ),
        (
            {
                "aftercall": "follow-up",
                "version": "2",
                "conversation_id": "c-1",
                "environment": "sandbox",
                "key": "sms",
                "kind": "sms",
                "to": "+14155550123",
                "message": "hi",
                "scheduled_for": "2026-11-25T10:00:00+00:00",
                "extra": True,
            },
            "extra",
        ),
    ],
    ids=["foreign", "conversation-event", "string", "unknown-kind", "other-version-extra-field"],
)
def test_a_payload_that_is_not_ours_is_refused_naming_what_is_wrong(
    follow_up_function: Invoke, payload: Any, named: str
) -> None:
    # Given a payload aftercall did not schedule
    # When the FollowUp function receives it
    with pytest.raises(FollowUpPayloadError) as raised:
        follow_up_function(payload)
    # Then it is refused as not ours, naming the field, without echoing values
    assert str(raised.value).startswith("not an aftercall follow-up payload")
    assert named in str(raised.value)
    assert "+14155550123" not in str(raised.value)


# --- no personal data in the FollowUp function's logs ------------------------------------------------


@pytest.mark.parametrize("kind", ["sms", "email", "callback"])
def test_the_follow_up_function_logs_no_raw_phone_or_email(
    stack: HandlerPeers, peers: FollowUpPeers, follow_up_function: Invoke, kind: str
) -> None:
    # Given a due follow-up for a customer with a phone and an email
    phone, address = unique_phone(), unique_email()
    payload = _scheduled_payload(stack, peers, conversation_ended(caller=phone, customer_email=address), kind)
    # When the FollowUp function sends it, and a second delivery is answered from the ledger
    with capture_logs() as logs:
        follow_up_function(payload)
        follow_up_function(payload)
    # Then its logs name the conversation and the outcome, and hold no raw phone number or address
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert lines
    assert all(line["conversation_id"] == payload["conversation_id"] for line in lines)
    text = logs.getvalue()
    assert phone not in text
    assert address not in text
    assert phone[-7:] not in text
    handled = [line["result"] for line in lines if line["message"] == "follow-up handled"]
    assert [result["status"] for result in handled] == ["sent", "already_sent"]
    masked = {"sms": mask_phone(phone), "email": mask_email(address), "callback": None}[kind]
    assert all(result.get("to") == masked for result in handled)
