"""Notifications end to end: ``conv.actions.notify(...)`` publishes a readable summary to the SNS
topic (moto server), read back from an SQS queue subscribed to it, as the sales team's email list
or chat hook would receive it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aftercall import aws
from aftercall.conversation import Conversation
from aftercall.errors import ActionsFailedError, ConfigurationError, EndFunctionError
from aftercall.ledger import FAILED
from tests.support.events import outbound_call_ended, re_emitted, support_call_ended
from tests.support.lambda_context import lambda_context
from tests.support.peers import NotificationsTopic, queue_arn
from tests.support.stack import HandlerPeers, create_queue, unique

TICKET_CREATE = "/crm/v3/objects/tickets$"


@pytest.fixture
def topic(moto_endpoint: str) -> Iterator[NotificationsTopic]:
    made = NotificationsTopic.create()
    yield made
    made.delete()


def _notify_hot_lead(conv: Conversation) -> None:
    conv.actions.notify(
        "Hot lead: renewal interest",
        {"Customer": "Jane Doe", "Campaign": conv.state.get("campaign"), "Callback window": "weekday mornings"},
    )


def test_notify_publishes_a_readable_summary_to_the_topic(stack: HandlerPeers, topic: NotificationsTopic) -> None:
    # Given an outbound call that found an interested lead, and an End function that notifies sales
    event = outbound_call_ended()
    conversation_id = event["detail"]["conversation_id"]
    # When the handler processes it
    report = stack.runtime(notifications_topic_arn=topic.topic_arn).handle(event, lambda_context(), _notify_hot_lead)
    # Then the subscriber received one message: the subject, one line per detail, the conversation
    (message,) = topic.received()
    assert message["Subject"] == "Hot lead: renewal interest"
    assert message["Message"] == (
        "Hot lead: renewal interest\n\n"
        "Customer: Jane Doe\n"
        "Campaign: renewal-2026-q4\n"
        "Callback window: weekday mornings\n\n"
        f"Conversation: {conversation_id}\n"
    )
    assert message["MessageAttributes"]["conversation_id"]["Value"] == conversation_id
    # And the report names the published message
    outcome = report["actions"]["notification:team"]
    assert outcome["status"] == "done"
    assert outcome["result"] == {"kind": "notification", "message_id": message["MessageId"]}


def test_notify_without_details_sends_the_conversation_summary(stack: HandlerPeers, topic: NotificationsTopic) -> None:
    # Given an End function that notifies with a subject only
    def end_function(conv: Conversation) -> None:
        conv.actions.notify("Unresolved billing call")

    event = support_call_ended()
    # When the handler processes a support call
    stack.runtime(notifications_topic_arn=topic.topic_arn).handle(event, lambda_context(), end_function)
    # Then the message lists the call's facts and the summary fields of its state
    (message,) = topic.received()
    lines = message["Message"].splitlines()
    assert lines[0] == "Unresolved billing call"
    for line in (
        "direction: inbound",
        "channel: voice",
        "duration_seconds: 312.0",
        "intent: billing_dispute",
        "sentiment: Negative",
        "resolution: unresolved",
    ):
        assert line in lines


def test_a_subject_sns_would_refuse_is_made_safe_and_kept_whole_in_the_message(
    stack: HandlerPeers, topic: NotificationsTopic
) -> None:
    # Given a subject with accents, a line break and more than 100 characters (SNS subjects must be
    # ASCII, without line breaks or control characters, under 100 characters)
    subject = "Lead chaud : José Müller\nveut un devis — " + "très urgent " * 8

    def end_function(conv: Conversation) -> None:
        conv.actions.notify(subject, {"Customer": "José Müller"})

    # When the handler processes the call
    stack.runtime(notifications_topic_arn=topic.topic_arn).handle(outbound_call_ended(), lambda_context(), end_function)
    # Then the published subject is what SNS accepts, readable, and the message keeps the original
    (message,) = topic.received()
    assert message["Subject"].startswith("Lead chaud : Jose Muller veut un devis")
    assert message["Subject"].isascii()
    assert message["Subject"].isprintable()
    assert len(message["Subject"]) <= 100
    assert message["Message"].startswith(subject.strip() + "\n\n")
    assert "Customer: José Müller" in message["Message"]


def test_two_notifications_with_their_own_keys_are_both_published(
    stack: HandlerPeers, topic: NotificationsTopic
) -> None:
    # Given an End function that notifies sales and, separately, the support leads
    def end_function(conv: Conversation) -> None:
        conv.actions.notify("Hot lead", {"Customer": "Jane Doe"}, key="sales")
        conv.actions.notify("Escalation", {"Reason": "angry customer"}, key="support")

    # When the handler processes the call
    report = stack.runtime(notifications_topic_arn=topic.topic_arn).handle(
        outbound_call_ended(), lambda_context(), end_function
    )
    # Then two messages were published, one per key
    assert sorted(m["Subject"] for m in topic.received()) == ["Escalation", "Hot lead"]
    assert set(report["actions"]) == {"notification:sales", "notification:support"}


def test_an_empty_subject_is_refused_when_planned(stack: HandlerPeers, topic: NotificationsTopic) -> None:
    # Given an End function that notifies with a blank subject
    def end_function(conv: Conversation) -> None:
        conv.actions.notify("   ")

    # When the handler processes the call
    with pytest.raises(EndFunctionError) as raised:
        stack.runtime(notifications_topic_arn=topic.topic_arn).handle(
            outbound_call_ended(), lambda_context(), end_function
        )
    # Then the call raised a ValueError naming the subject, and nothing was published
    assert isinstance(raised.value.__cause__, ValueError)
    assert "notify: subject must not be empty" in str(raised.value.__cause__)
    assert topic.received() == []


# --- never twice ------------------------------------------------------------------------------------


def test_a_retry_after_another_action_failed_does_not_publish_again(
    stack: HandlerPeers, topic: NotificationsTopic
) -> None:
    # Given the CRM refuses the ticket once, and an End function that opens a ticket and notifies
    stack.crm.add_fault("status", method="POST", path=TICKET_CREATE, status=400, times=1)

    def end_function(conv: Conversation) -> None:
        conv.actions.open_ticket("Refund request", "Charged twice")
        conv.actions.notify("Refund requested", {"Amount": "49.00"})

    event = support_call_ended()
    runtime = stack.runtime(notifications_topic_arn=topic.topic_arn)
    with pytest.raises(ActionsFailedError):
        runtime.handle(event, lambda_context(), end_function)
    # When Lambda retries the event, and later the platform emits it again
    retry = runtime.handle(event, lambda_context(), end_function)
    duplicate = runtime.handle(re_emitted(event), lambda_context(), end_function)
    # Then the team received the notification exactly once
    assert len(topic.received()) == 1
    assert retry["actions"]["notification:team"]["status"] == "already_done"
    assert retry["actions"]["support_ticket"]["status"] == "done"
    assert duplicate["duplicate"] is True


def test_a_publish_that_failed_is_published_once_on_retry(stack: HandlerPeers) -> None:
    # Given the notifications topic does not exist yet (SNS answers NotFound)
    name = unique("aftercall-notifications")
    topic_arn = f"arn:aws:sns:us-east-1:123456789012:{name}"
    runtime = stack.runtime(notifications_topic_arn=topic_arn)
    event = outbound_call_ended()
    with pytest.raises(ActionsFailedError) as raised:
        runtime.handle(event, lambda_context(), _notify_hot_lead)
    failed = stack.ledger().lookup(event["detail"]["conversation_id"], "notification:team")
    # When the topic is there and Lambda retries the event
    assert aws.client("sns").create_topic(Name=name)["TopicArn"] == topic_arn
    topic = NotificationsTopic(topic_arn, create_queue(f"{name}-subscriber"))
    aws.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn(topic.queue_url))
    retry = runtime.handle(event, lambda_context(), _notify_hot_lead)
    # Then the first attempt failed with SNS's error, and the retry published exactly one message
    assert type(raised.value.failures["notification:team"]).__name__ == "NotFoundException"
    assert failed is not None
    assert failed["status"] == FAILED
    assert retry["actions"]["notification:team"]["status"] == "done"
    assert [m["Subject"] for m in topic.received()] == ["Hot lead: renewal interest"]
    topic.delete()


# --- not configured ---------------------------------------------------------------------------------


def test_notifications_not_configured_fail_that_action_while_the_others_complete(stack: HandlerPeers) -> None:
    # Given a runtime without a notifications topic, and an End function that writes a summary,
    # opens a ticket and notifies
    def end_function(conv: Conversation) -> None:
        conv.actions.log_summary()
        conv.actions.open_ticket("Refund request")
        conv.actions.notify("Refund requested")

    event = support_call_ended()
    conversation_id = event["detail"]["conversation_id"]
    # When the handler processes the call
    with pytest.raises(ActionsFailedError) as raised:
        stack.runtime(notifications_topic_arn=None).handle(event, lambda_context(), end_function)
    # Then only the notification failed, with a configuration error naming the setting ...
    assert set(raised.value.failures) == {"notification:team"}
    error = raised.value.failures["notification:team"]
    assert isinstance(error, ConfigurationError)
    assert "NOTIFICATIONS_TOPIC_ARN" in str(error)
    item = stack.ledger().lookup(conversation_id, "notification:team")
    assert item is not None
    assert item["status"] == FAILED
    assert "ConfigurationError" in item["error"]
    # ... and the summary and the ticket were written
    assert len(stack.notes_for(conversation_id)) == 1
    assert len(stack.tickets_for(conversation_id)) == 1
