"""Ingest test helpers: signed vendor webhooks, a bus that records what it accepted, the signing secret.

Shared by the ingest, hostile-input, tracing and Standard Webhooks tests.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aftercall import aws
from aftercall.ingest import signatures
from aftercall.ingest.common import Normalised
from aftercall.ingest.normalise import normalise
from aftercall.ingest.service import IngestService, WebhookRequest
from aftercall.settings import IngestSettings
from tests.support.ops import OpsTarget
from tests.support.stack import unique

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "events" / "vendor"
PUBLISHED = ROOT / "tests" / "fixtures" / "vendor-payloads"
SECRETS = {
    "vapi": "vapi-hmac-secret-0001",
    "retell": "key_retell_webhook_badge_0001",
    "elevenlabs": "wsec_elevenlabs_0001",
    "generic": "generic-bridge-secret-0001",
}
SAMPLE_FILES = {
    "vapi": "vapi_end_of_call_report.json",
    "retell": "retell_call_analyzed.json",
    "elevenlabs": "elevenlabs_post_call_transcription.json",
    "generic": "generic_conversation_ended.json",
    "connect": "connect_disconnected.json",
}
WEBHOOKS = ("vapi", "retell", "elevenlabs", "generic")


def sample(platform: str) -> Any:
    """The platform's sample with a fresh call id, so tests never share a conversation."""
    payload = json.loads((SAMPLES / SAMPLE_FILES[platform]).read_text(encoding="utf-8"))
    suffix = uuid.uuid4().hex[:10]
    if platform == "vapi":
        payload["message"]["call"]["id"] += f"-{suffix}"
    elif platform == "retell":
        payload["call"]["call_id"] += f"-{suffix}"
    elif platform == "elevenlabs":
        payload["data"]["conversation_id"] += f"-{suffix}"
    elif platform == "generic":
        payload["conversation_id"] += f"-{suffix}"
    else:
        payload["detail"]["contactId"] += f"-{suffix}"
    return payload


def sign(platform: str, body: bytes, secret: str, at: float | None = None) -> dict[str, str]:
    now = time.time() if at is None else at
    if platform == "retell":
        return signatures.sign_retell(body, secret, int(now * 1000))
    signer = {
        "vapi": signatures.sign_vapi,
        "elevenlabs": signatures.sign_elevenlabs,
        "generic": signatures.sign_generic,
    }
    return signer[platform](body, secret, int(now))


def webhook(
    platform: str,
    body: bytes,
    *,
    secret: str | None = None,
    at: float | None = None,
    headers: dict[str, str] | None = None,
    path: str | None = None,
    method: str = "POST",
) -> WebhookRequest:
    signed = sign(platform, body, secret or SECRETS[platform], at) if headers is None else headers
    return WebhookRequest(method, path or f"/{platform}", {**signed, "content-type": "application/json"}, body)


def encode(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, indent=1).encode("utf-8")


def mapped(platform: str, payload: Any) -> dict[str, Any]:
    result = normalise(platform, payload, "sandbox")
    assert isinstance(result, Normalised)
    return result.detail


@pytest.fixture
def ops_target(moto_endpoint: str) -> Iterator[OpsTarget]:
    """A bus with a rule copying Conversation Ended events to a "delivered" queue, and a failed-events queue.

    Lighter than the operator tools' target of the same name (no CloudFormation stack: ingest needs none).
    """
    suffix = uuid.uuid4().hex[:10]
    sqs, events = aws.client("sqs"), aws.client("events")
    bus = f"aftercall-ingest-{suffix}"
    events.create_event_bus(Name=bus)
    queue_url = str(sqs.create_queue(QueueName=f"ingest-failed-{suffix}")["QueueUrl"])
    delivered_url = str(sqs.create_queue(QueueName=f"ingest-delivered-{suffix}")["QueueUrl"])
    delivered_arn = sqs.get_queue_attributes(QueueUrl=delivered_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    rule = f"conversation-ended-{suffix}"
    pattern = {"detail-type": ["Conversation Ended"], "source": ["aftercall.platform"]}
    events.put_rule(Name=rule, EventBusName=bus, EventPattern=json.dumps(pattern))
    events.put_targets(
        Rule=rule,
        EventBusName=bus,
        Targets=[
            {
                "Id": "delivered",
                "Arn": delivered_arn,
                "InputTransformer": {"InputPathsMap": {}, "InputTemplate": "<aws.events.event.json>"},
            }
        ],
    )
    yield OpsTarget(moto_endpoint, "", bus, queue_url, delivered_url, rules=[rule])
    events.remove_targets(Rule=rule, EventBusName=bus, Ids=["delivered"])
    events.delete_rule(Name=rule, EventBusName=bus)
    events.delete_event_bus(Name=bus)
    for url in (queue_url, delivered_url):
        sqs.delete_queue(QueueUrl=url)


@pytest.fixture
def secret_id(moto_endpoint: str) -> Iterator[str]:
    """A signing secret with one key per platform, in Secrets Manager on the moto server."""
    name = unique("aftercall/ingest")
    aws.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(SECRETS))
    yield name
    aws.client("secretsmanager").delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def settings_for(target: OpsTarget, secret_id: str | None, **overrides: Any) -> IngestSettings:
    values: dict[str, Any] = {
        "stage": "sandbox",
        "bus_name": target.bus,
        "event_source": target.source,
        "secret_id": secret_id,
        "failed_events_queue_url": target.queue_url,
        **overrides,
    }
    return IngestSettings(**values)


@pytest.fixture
def service(ops_target: OpsTarget, secret_id: str) -> IngestService:
    return IngestService(settings_for(ops_target, secret_id))


def failed_records(target: OpsTarget) -> list[dict[str, Any]]:
    return [json.loads(message["Body"]) for message in target.drain()]


# ---------------------------------------------------------------------------------------------- accepted
