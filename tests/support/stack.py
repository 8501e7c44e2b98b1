"""The per-test local stack: AWS resources on the moto server plus a running fake CRM.

Tests build the real runtime against it (``stack.runtime()``) or the real HubSpot adapter
(``stack.hubspot()``); nothing of ours is replaced, only endpoints and timings are tuned.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aftercall import aws
from aftercall.credentials import SecretCredentials
from aftercall.crm.base import Crm
from aftercall.crm.hubspot import HubSpotCrm, marker
from aftercall.handler import EndHandlerRuntime, new_callers
from aftercall.ledger import ActionLedger
from aftercall.settings import EndHandlerSettings
from aftercall_ops.fakes.hubspot import FakeCrm

#: HTTP settings that keep fault tests fast: tiny backoffs, short timeouts. The policy (what is
#: retried, how often, what a 429 waits) is the runtime's own; only the durations shrink.
FAST_HTTP: Mapping[str, Any] = {
    "backoff_base": 0.01,
    "backoff_cap": 0.05,
    "connect_timeout": 1.0,
    "read_timeout": 3.0,
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_table(name: str) -> str:
    aws.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def create_queue(name: str) -> str:
    return str(aws.client("sqs").create_queue(QueueName=name)["QueueUrl"])


def create_secret(name: str, value: Mapping[str, Any] | str) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    aws.client("secretsmanager").create_secret(Name=name, SecretString=text)
    return name


def put_secret(name: str, value: Mapping[str, Any] | str) -> None:
    text = value if isinstance(value, str) else json.dumps(value)
    aws.client("secretsmanager").put_secret_value(SecretId=name, SecretString=text)


def drain(queue_url: str) -> list[dict[str, Any]]:
    """Every message in the queue (received and deleted), bodies decoded from JSON."""
    sqs = aws.client("sqs")
    bodies: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


@dataclass
class HandlerPeers:
    """One test's resources: idempotency table, failed-events queue, CRM secret, fake CRM."""

    table: str
    queue_url: str
    secret_id: str
    crm: FakeCrm
    contact_id: str
    stage: str = "sandbox"
    #: The notifications topic the template always creates (the default End function notifies on hot leads).
    notifications_topic_arn: str | None = None
    _cleanup: list[Any] = field(default_factory=list)

    def settings(self, **overrides: Any) -> EndHandlerSettings:
        base = EndHandlerSettings(
            stage=self.stage,
            idempotency_table=self.table,
            crm_provider="hubspot",
            crm_secret_id=self.secret_id,
            crm_base_url=self.crm.url,
            failed_events_queue_url=self.queue_url,
            local_mode=True,
            notifications_topic_arn=self.notifications_topic_arn,
        )
        return replace(base, **overrides)

    def runtime(self, *, fast: bool = True, **settings_overrides: Any) -> EndHandlerRuntime:
        """The real runtime on this stack. ``fast`` shrinks the CRM client's backoffs/timeouts;
        ``fast=False`` uses the runtime's own ``build_crm`` unchanged."""
        settings = self.settings(**settings_overrides)
        if not fast:
            return EndHandlerRuntime(settings)

        def crm_factory(s: EndHandlerSettings) -> Crm:
            credentials = SecretCredentials(s.crm_secret_id, ("access_token",), s.secret_max_age)
            assert s.crm_base_url is not None
            return HubSpotCrm(
                credentials,
                s.crm_base_url,
                allow_loopback_http=s.local_mode,
                new_callers=new_callers(s),
                **FAST_HTTP,
            )

        return EndHandlerRuntime(settings, crm_factory=crm_factory)

    def hubspot(self, *, secret_id: str | None = None, base_url: str | None = None, **http: Any) -> HubSpotCrm:
        """The real HubSpot adapter on this stack (``http`` overrides :data:`FAST_HTTP`)."""
        credentials = SecretCredentials(secret_id or self.secret_id, ("access_token",), 300)
        options = {"allow_loopback_http": True, **FAST_HTTP, **http}
        return HubSpotCrm(credentials, base_url or self.crm.url, **options)

    def ledger(self) -> ActionLedger:
        return ActionLedger(self.table, 3600)

    def put_secret(self, value: Mapping[str, Any] | str) -> None:
        put_secret(self.secret_id, value)

    def parked(self) -> list[dict[str, Any]]:
        """The records in the failed-events queue (drained)."""
        return drain(self.queue_url)

    def notes_for(self, conversation_id: str) -> list[dict[str, Any]]:
        return self.crm.notes_for(marker(conversation_id))

    def tickets_for(self, conversation_id: str) -> list[dict[str, Any]]:
        return self.crm.tickets_for(marker(conversation_id))

    def delete(self) -> None:
        with contextlib.suppress(Exception):
            aws.client("dynamodb").delete_table(TableName=self.table)
        with contextlib.suppress(Exception):
            aws.client("sqs").delete_queue(QueueUrl=self.queue_url)
        with contextlib.suppress(Exception):
            aws.client("secretsmanager").delete_secret(SecretId=self.secret_id, ForceDeleteWithoutRecovery=True)
        if self.notifications_topic_arn:
            with contextlib.suppress(Exception):
                aws.client("sns").delete_topic(TopicArn=self.notifications_topic_arn)
