"""The AWS peers of follow-ups and notifications on the moto server, and ways to read them back.

* :class:`FollowUpPeers`: a schedule group, the FollowUp target and role ARNs, the failed-follow-ups
  queue, an event bus whose ``Callback Requested`` events a rule routes to an SQS queue, and an
  SES-verified sender, all unique to one test.
* :class:`NotificationsTopic`: an SNS topic with an SQS queue subscribed, so a test reads back
  exactly what the team's subscribers would receive.
* :func:`sms_sent` / :func:`emails_sent`: what moto's SNS and SES recorded as sent (read over HTTP
  from the server's ``/moto-api/data.json``), filtered by recipient or sender.
* :func:`follow_up_app`: ``functions/follow_up/app.py``, the FollowUp Lambda's entry point, loaded
  as a module (its name, ``app``, is taken by the End handler's on ``sys.path``).
* :func:`capture_logs`: the runtime logger's structured lines, for PII checks.

Moto keeps one server per test process, so every filter here keys on something unique to a test
(a sender address, a phone number), never on counts across the server.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from aftercall import aws
from aftercall.follow_ups.send import CALLBACK_DETAIL_TYPE, FOLLOW_UP_SOURCE
from aftercall.observability import logger as runtime_logger
from tests.support.stack import create_queue, drain, unique

REPO = Path(__file__).resolve().parents[2]
FOLLOW_UP_APP = REPO / "functions" / "follow_up" / "app.py"
ACCOUNT = "123456789012"
REGION = "us-east-1"


def unique_phone() -> str:
    """An E.164 number no other test uses (moto keeps every SMS of the process)."""
    return "+1415" + f"{uuid.uuid4().int % 10**7:07d}"


def unique_email(prefix: str = "customer") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


def queue_arn(queue_url: str) -> str:
    attributes = aws.client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])


# --- follow-ups -----------------------------------------------------------------------------------


@dataclass
class FollowUpPeers:
    """What template.yaml gives the follow-up path, made on the moto server for one test."""

    group: str
    target_arn: str
    role_arn: str
    failed_follow_ups_url: str
    failed_follow_ups_arn: str
    bus: str
    rule: str
    callbacks_url: str
    from_email: str

    @classmethod
    def create(cls) -> FollowUpPeers:
        name = unique("aftercall")
        scheduler = aws.client("scheduler")
        group = f"{name}-follow-ups"
        scheduler.create_schedule_group(Name=group)
        failed_url = create_queue(f"{name}-failed-follow-ups")
        events = aws.client("events")
        bus = f"{name}-bus"
        events.create_event_bus(Name=bus)
        rule = f"{name}-callbacks"
        events.put_rule(
            Name=rule,
            EventBusName=bus,
            EventPattern=json.dumps({"source": [FOLLOW_UP_SOURCE], "detail-type": [CALLBACK_DETAIL_TYPE]}),
        )
        callbacks_url = create_queue(f"{name}-callbacks")
        events.put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": "callbacks", "Arn": queue_arn(callbacks_url)}])
        sender = unique_email("follow-ups")
        aws.client("sesv2").create_email_identity(EmailIdentity=sender)
        return cls(
            group=group,
            target_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}-FollowUp",
            role_arn=f"arn:aws:iam::{ACCOUNT}:role/{name}-SchedulerRole",
            failed_follow_ups_url=failed_url,
            failed_follow_ups_arn=queue_arn(failed_url),
            bus=bus,
            rule=rule,
            callbacks_url=callbacks_url,
            from_email=sender,
        )

    def settings(self) -> dict[str, Any]:
        """The End handler's settings for follow-ups, as template.yaml sets them."""
        return {
            "follow_up_schedule_group": self.group,
            "follow_up_target_arn": self.target_arn,
            "scheduler_role_arn": self.role_arn,
            "follow_up_dead_letter_arn": self.failed_follow_ups_arn,
        }

    def schedules(self) -> list[dict[str, Any]]:
        """Every schedule in the group, read back in full with ``get_schedule``."""
        scheduler = aws.client("scheduler")
        names = [s["Name"] for s in scheduler.list_schedules(GroupName=self.group).get("Schedules", [])]
        return [self.schedule(name) for name in sorted(names)]

    def schedule(self, name: str) -> dict[str, Any]:
        response = aws.client("scheduler").get_schedule(Name=name, GroupName=self.group)
        return {key: value for key, value in response.items() if key != "ResponseMetadata"}

    def fire(self, schedule: dict[str, Any]) -> dict[str, Any]:
        """What Scheduler does when the time comes: take the target's Input, then delete the schedule
        (``ActionAfterCompletion: DELETE``). Returns the payload to hand to the target."""
        payload: dict[str, Any] = json.loads(schedule["Target"]["Input"])
        if schedule.get("ActionAfterCompletion") == "DELETE":
            aws.client("scheduler").delete_schedule(Name=schedule["Name"], GroupName=self.group)
        return payload

    def callback_events(self) -> list[dict[str, Any]]:
        """The ``Callback Requested`` events the rule delivered (drained from its queue)."""
        return drain(self.callbacks_url)

    def delete(self) -> None:
        scheduler = aws.client("scheduler")
        events = aws.client("events")
        sqs = aws.client("sqs")
        with contextlib.suppress(Exception):
            for item in scheduler.list_schedules(GroupName=self.group).get("Schedules", []):
                scheduler.delete_schedule(Name=item["Name"], GroupName=self.group)
            scheduler.delete_schedule_group(Name=self.group)
        with contextlib.suppress(Exception):
            events.remove_targets(Rule=self.rule, EventBusName=self.bus, Ids=["callbacks"])
            events.delete_rule(Name=self.rule, EventBusName=self.bus)
            events.delete_event_bus(Name=self.bus)
        for url in (self.callbacks_url, self.failed_follow_ups_url):
            with contextlib.suppress(Exception):
                sqs.delete_queue(QueueUrl=url)
        with contextlib.suppress(Exception):
            aws.client("sesv2").delete_email_identity(EmailIdentity=self.from_email)


# --- notifications --------------------------------------------------------------------------------


@dataclass
class NotificationsTopic:
    """The notifications topic with one SQS subscriber standing in for the sales team."""

    topic_arn: str
    queue_url: str

    @classmethod
    def create(cls) -> NotificationsTopic:
        name = unique("aftercall-notifications")
        topic_arn = str(aws.client("sns").create_topic(Name=name)["TopicArn"])
        queue_url = create_queue(f"{name}-subscriber")
        aws.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn(queue_url))
        return cls(topic_arn, queue_url)

    def received(self) -> list[dict[str, Any]]:
        """The SNS envelopes the subscriber received (``Subject``, ``Message``, attributes), drained."""
        return drain(self.queue_url)

    def delete(self) -> None:
        with contextlib.suppress(Exception):
            aws.client("sns").delete_topic(TopicArn=self.topic_arn)
        with contextlib.suppress(Exception):
            aws.client("sqs").delete_queue(QueueUrl=self.queue_url)


# --- what moto recorded as sent -------------------------------------------------------------------


def moto_data() -> dict[str, Any]:
    """The moto server's model data (``/moto-api/data.json``), read over HTTP like any peer."""
    endpoint = os.environ["AWS_ENDPOINT_URL"].rstrip("/")
    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=10) as response:
        data: dict[str, Any] = json.load(response)
    return data


def sms_sent(to: str) -> list[dict[str, Any]]:
    """SMS messages SNS sent to the phone number ``to`` (``phone_number``, ``message``, ``message_id``)."""
    return [sms for sms in moto_data().get("sns", {}).get("SMS", []) if sms.get("phone_number") == to]


def emails_sent(source: str) -> list[dict[str, Any]]:
    """Emails SES sent from ``source`` (``destinations``, ``subject``, ``body``, ``id``)."""
    return [message for message in moto_data().get("ses", {}).get("Message", []) if message.get("source") == source]


# --- the FollowUp function ------------------------------------------------------------------------

_follow_up_app: ModuleType | None = None


def follow_up_app() -> ModuleType:
    """``functions/follow_up/app.py`` as module ``follow_up_app`` (loaded once per test process)."""
    global _follow_up_app
    if _follow_up_app is None:
        spec = importlib.util.spec_from_file_location("follow_up_app", FOLLOW_UP_APP)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        _follow_up_app = module
    return _follow_up_app


def follow_up_environment(table: str, peers: FollowUpPeers) -> dict[str, str]:
    """The FollowUp function's environment, as template.yaml sets it."""
    return {
        "STAGE": "sandbox",
        "IDEMPOTENCY_TABLE": table,
        "EVENT_BUS_NAME": peers.bus,
        "FOLLOW_UP_FROM_EMAIL": peers.from_email,
    }


# --- logs -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def capture_logs() -> Iterator[io.StringIO]:
    """The runtime logger's JSON lines written while the block runs (Powertools' own formatter)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(runtime_logger.registered_formatter)
    underlying = logging.getLogger(runtime_logger.name)
    underlying.addHandler(handler)
    try:
        yield buffer
    finally:
        underlying.removeHandler(handler)
