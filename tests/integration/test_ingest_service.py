"""The ingest service end to end on the moto server: verify → normalise → PutEvents → what reached the bus.

The bus has a rule that copies every ``Conversation Ended`` event into a "delivered" queue, so a
test sees exactly what the bus accepted; the signing secret is a real Secrets Manager secret read
through Powertools. PutEvents failures come from a real HTTP proxy in front of moto. The duplicate
test runs both delivered events through the real EndHandler runtime and counts notes in the fake CRM.
"""

# ruff: noqa: F811 - the fixtures imported from tests.support are taken as parameters

from __future__ import annotations

import base64
import importlib.util
import io
import json
import logging
import time
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aftercall.errors import ConfigurationError
from aftercall.ingest import signatures
from aftercall.ingest.errors import IngestUnavailableError
from aftercall.ingest.service import IngestService, WebhookRequest
from aftercall.observability import logger as runtime_logger
from aftercall.settings import IngestSettings
from aftercall_ops.emulator.template import load_template, sam_transform
from aftercall_ops.operations.dlq import RECEIVE_ARGS, classify
from aftercall_ops.operations.replay import ReplayOptions, replay
from end_function import end_function
from tests.support.events import CUSTOMER_PHONE
from tests.support.ingest import (  # noqa: F401 - fixtures are used by name
    PUBLISHED,
    ROOT,
    SAMPLE_FILES,
    SAMPLES,
    SECRETS,
    WEBHOOKS,
    encode,
    failed_records,
    mapped,
    ops_target,
    sample,
    secret_id,
    service,
    settings_for,
    sign,
    webhook,
)
from tests.support.lambda_context import lambda_context
from tests.support.ops import FaultProxy, OpsTarget
from tests.support.stack import HandlerPeers, put_secret, unique


@pytest.mark.parametrize("platform", WEBHOOKS)
def test_a_signed_webhook_puts_exactly_one_mapped_event_on_the_bus(
    platform: str, service: IngestService, ops_target: OpsTarget
) -> None:
    # Given the platform's sample, signed with its secret as the platform would
    payload = sample(platform)
    # When it is posted to the platform's path
    response = service.handle(webhook(platform, encode(payload)))
    # Then the answer is 200 accepted, after exactly one event reached the bus ...
    assert response.status == 200
    assert response.body["status"] == "accepted"
    (event,) = ops_target.delivered()
    assert event["id"] == response.body["event_id"]
    # ... as a Conversation Ended event with the mapped detail
    assert event["detail-type"] == "Conversation Ended"
    assert event["source"] == "aftercall.platform"
    assert event["detail"] == mapped(platform, payload)
    assert event["detail"]["conversation_id"] == response.body["conversation_id"]
    assert failed_records(ops_target) == []


def test_the_vapi_event_carries_the_mapped_fields(service: IngestService, ops_target: OpsTarget) -> None:
    payload = sample("vapi")
    service.handle(webhook("vapi", encode(payload)))
    (event,) = ops_target.delivered()
    detail = event["detail"]
    assert detail["conversation_id"] == payload["message"]["call"]["id"]
    assert (detail["caller"], detail["callee"], detail["direction"]) == (CUSTOMER_PHONE, "+18005550100", "inbound")
    assert (detail["ended_reason"], detail["ended_reason_raw"]) == ("other", "assistantEndedCall")
    assert detail["state"]["Support Ticket"]["issue"]["priority"] == "urgent"


def test_vapi_bearer_credentials_are_accepted(service: IngestService, ops_target: OpsTarget) -> None:
    body = encode(sample("vapi"))
    response = service.handle(webhook("vapi", body, headers={"x-vapi-secret": SECRETS["vapi"]}))
    assert response.status == 200
    assert len(ops_target.delivered()) == 1


# ---------------------------------------------------------------------------------------------- refused


def _tampered(platform: str, body: bytes) -> WebhookRequest:
    request = webhook(platform, body)
    return WebhookRequest(request.method, request.path, request.headers, body.replace(b"2024", b"2025", 1) + b" ")


REFUSALS = {
    "tampered body": (_tampered, "signature_mismatch"),
    "wrong secret": (lambda p, b: webhook(p, b, secret="not-the-configured-one"), "signature_mismatch"),
    "stale timestamp": (lambda p, b: webhook(p, b, at=time.time() - 3 * 3600), "timestamp_outside_tolerance"),
    "missing header": (lambda p, b: webhook(p, b, headers={}), "missing_signature"),
}


@pytest.mark.parametrize("platform", WEBHOOKS)
@pytest.mark.parametrize("case", list(REFUSALS))
def test_an_unverifiable_webhook_is_refused_with_its_reason_and_nothing_is_put(
    platform: str, case: str, service: IngestService, ops_target: OpsTarget
) -> None:
    make, reason = REFUSALS[case]
    # Given a webhook that cannot be verified
    request = make(platform, encode(sample(platform)))
    # When it is posted
    response = service.handle(request)
    # Then it is refused with a 401 naming why, and nothing reached the bus or the failed-events queue
    assert response.status == 401
    assert response.body["error"] == reason
    assert response.body["message"]
    assert ops_target.delivered() == []
    assert failed_records(ops_target) == []


@pytest.mark.parametrize(
    ("platform", "published_file", "reason", "status"),
    [
        ("retell", "retell_call_ended_webhook.jsonc", "invalid_json", 400),
        ("vapi", "vapi_end_of_call_report_consent.jsonc", "invalid_json", 400),
    ],
)
def test_a_signed_body_that_is_not_json_is_refused_with_where_it_broke(
    platform: str, published_file: str, reason: str, status: int, service: IngestService, ops_target: OpsTarget
) -> None:
    # Given a vendor's sample exactly as published (not JSON), correctly signed
    body = (PUBLISHED / published_file).read_bytes()
    response = service.handle(webhook(platform, body))
    # Then it is a 400 that says where the JSON broke, and nothing is put
    assert (response.status, response.body["error"]) == (status, reason)
    assert "line" in response.body["message"]
    assert ops_target.delivered() == []


def test_a_signed_payload_that_cannot_be_mapped_is_a_422_and_nothing_is_put(
    service: IngestService, ops_target: OpsTarget
) -> None:
    payload = sample("vapi")
    del payload["message"]["call"]
    response = service.handle(webhook("vapi", encode(payload)))
    assert (response.status, response.body["error"]) == (422, "missing_field")
    assert "message.call.id" in response.body["message"]
    assert ops_target.delivered() == []


def test_a_generic_detail_for_the_other_stage_is_refused(service: IngestService, ops_target: OpsTarget) -> None:
    payload = {**sample("generic"), "environment": "live"}
    response = service.handle(webhook("generic", encode(payload)))
    assert (response.status, response.body["error"]) == (422, "wrong_environment")
    assert ops_target.delivered() == []


@pytest.mark.parametrize(
    ("platform", "payload"),
    [
        ("vapi", {"message": {"type": "status-update", "status": "ended"}}),
        ("retell", {"event": "call_ended", "call": {"call_id": "x"}}),
        ("elevenlabs", {"type": "post_call_audio", "data": {"conversation_id": "x"}}),
    ],
)
def test_other_genuine_event_types_are_acknowledged_and_not_put(
    platform: str, payload: dict[str, Any], service: IngestService, ops_target: OpsTarget
) -> None:
    response = service.handle(webhook(platform, encode(payload)))
    assert (response.status, response.body["status"]) == (200, "ignored")
    assert ops_target.delivered() == []


def test_routing_method_and_size_are_checked_first(ops_target: OpsTarget, secret_id: str) -> None:
    service = IngestService(settings_for(ops_target, secret_id, max_body_bytes=1000))
    body = encode(sample("generic"))
    assert service.handle(webhook("generic", body, path="/twilio")).status == 404
    assert service.handle(webhook("generic", body, path="/")).body["error"] == "unknown_platform"
    assert service.handle(webhook("generic", body, method="GET")).status == 405
    big = encode({**sample("generic"), "state": {"notes": "x" * 2000}})
    response = service.handle(webhook("generic", big))
    assert (response.status, response.body["error"]) == (413, "body_too_large")
    assert ops_target.delivered() == []


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_no_altered_signed_body_reaches_the_bus(
    data: st.DataObject, service: IngestService, ops_target: OpsTarget
) -> None:
    # Given a correctly signed generic webhook
    body = encode(sample("generic"))
    request = webhook("generic", body)
    # When any one byte of the body is changed in transit
    index = data.draw(st.integers(0, len(body) - 1))
    replacement = data.draw(st.integers(0, 255).filter(lambda b: b != body[index]))
    altered = body[:index] + bytes([replacement]) + body[index + 1 :]
    response = service.handle(WebhookRequest("POST", "/generic", request.headers, altered))
    # Then it is refused and nothing is on the bus
    assert (response.status, response.body["error"]) == (401, "signature_mismatch")
    assert ops_target.delivered() == []


# ---------------------------------------------------------------------------------------------- secrets


def test_a_platform_missing_from_the_secret_is_a_503_so_the_vendor_retries(
    ops_target: OpsTarget, secret_id: str
) -> None:
    put_secret(secret_id, {key: value for key, value in SECRETS.items() if key != "retell"})
    service = IngestService(settings_for(ops_target, secret_id))
    response = service.handle(webhook("retell", encode(sample("retell"))))
    assert (response.status, response.body["error"]) == (503, "platform_not_configured")
    assert ops_target.delivered() == []


def test_an_unreadable_secret_is_a_503_that_does_not_name_the_secret(ops_target: OpsTarget) -> None:
    missing = unique("aftercall/ingest-missing")
    service = IngestService(settings_for(ops_target, missing))
    response = service.handle(webhook("generic", encode(sample("generic"))))
    assert (response.status, response.body["error"]) == (503, "secret_unavailable")
    assert missing not in json.dumps(response.body)
    assert ops_target.delivered() == []


def test_a_rotated_secret_is_picked_up_by_a_warm_process(
    service: IngestService, ops_target: OpsTarget, secret_id: str
) -> None:
    # Given a warm service that has cached the secret
    assert service.handle(webhook("elevenlabs", encode(sample("elevenlabs")))).status == 200
    # When the secret is rotated in Secrets Manager and the vendor signs with the new one
    put_secret(secret_id, {**SECRETS, "elevenlabs": "rotated-secret"})
    response = service.handle(webhook("elevenlabs", encode(sample("elevenlabs")), secret="rotated-secret"))
    # Then the mismatch triggers one re-read and the webhook is accepted
    assert response.status == 200
    assert len(ops_target.delivered()) == 2


def test_the_previous_secret_is_accepted_during_a_rotation(ops_target: OpsTarget, secret_id: str) -> None:
    put_secret(secret_id, {**SECRETS, "retell": "new-key", "retell_previous": SECRETS["retell"]})
    service = IngestService(settings_for(ops_target, secret_id))
    for secret in ("new-key", SECRETS["retell"]):
        assert service.handle(webhook("retell", encode(sample("retell")), secret=secret)).status == 200
    assert service.handle(webhook("retell", encode(sample("retell")), secret="older")).status == 401
    assert len(ops_target.delivered()) == 2


# ---------------------------------------------------------------------------------------------- the bus refuses


def test_a_refused_put_is_a_503_and_the_event_waits_in_the_failed_events_queue_for_replay(
    ops_target: OpsTarget, secret_id: str, fault_proxy: FaultProxy
) -> None:
    # Given a bus that refuses every entry (PutEvents answers with a failed entry)
    fault_proxy.permanent_entry("InternalFailure")
    refusing = boto3.session.Session().client("events", endpoint_url=fault_proxy.url, region_name="us-east-1")
    service = IngestService(settings_for(ops_target, secret_id), events_client=refusing)
    payload = sample("retell")
    # When a valid webhook arrives
    response = service.handle(webhook("retell", encode(payload)), lambda_context())
    # Then the vendor is told to retry, nothing reached the bus ...
    assert (response.status, response.body["error"]) == (503, "bus_unavailable")
    assert "failed-events queue" in response.body["message"]
    assert ops_target.delivered() == []
    # ... and the mapped event waits in the failed-events queue, in a shape replay recognises
    sqs = ops_target.sqs()
    (message,) = sqs.receive_message(QueueUrl=ops_target.queue_url, MaxNumberOfMessages=10, **RECEIVE_ARGS)["Messages"]
    failed = classify(message)
    assert failed.shape == "lambda-on-failure"
    assert failed.condition == "IngestPutEventsFailed"
    assert failed.conversation_id == payload["call"]["call_id"]
    assert failed.event is not None
    assert failed.event["detail"] == mapped("retell", payload)
    sqs.change_message_visibility(
        QueueUrl=ops_target.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    # When the operator replays the queue onto the (now healthy) bus
    report = replay(
        sqs, ops_target.queue_url, ReplayOptions(mode="put-events"), events=ops_target.events(), bus=ops_target.bus
    )
    # Then the very same detail is delivered
    assert report.summary()["replayed"] == 1
    (event,) = ops_target.delivered()
    assert event["detail"] == mapped("retell", payload)


def test_without_a_failed_events_queue_a_refused_put_is_still_a_503(
    ops_target: OpsTarget, secret_id: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.stop_after(0)
    refusing = boto3.session.Session().client("events", endpoint_url=fault_proxy.url, region_name="us-east-1")
    service = IngestService(settings_for(ops_target, secret_id, failed_events_queue_url=None), events_client=refusing)
    response = service.handle(webhook("generic", encode(sample("generic"))))
    assert (response.status, response.body["error"]) == (503, "bus_unavailable")
    assert "failed-events queue" not in response.body["message"]


# ---------------------------------------------------------------------------------------------- never twice


def test_the_same_webhook_twice_is_one_conversation_processed(
    service: IngestService, ops_target: OpsTarget, stack: HandlerPeers
) -> None:
    # Given a Vapi end-of-call report from the CRM's known customer, delivered twice (a vendor retry)
    body = encode(sample("vapi"))
    first = service.handle(webhook("vapi", body))
    second = service.handle(webhook("vapi", body))
    # Then both deliveries were accepted and put on the bus, with identical details
    assert (first.status, second.status) == (200, 200)
    events = ops_target.delivered()
    assert len(events) == 2
    assert events[0]["detail"] == events[1]["detail"]
    assert events[0]["id"] != events[1]["id"]
    # When the EndHandler runs the repo's end_function on each
    runtime = stack.runtime()
    reports = [runtime.handle(event, lambda_context(), end_function) for event in events]
    # Then the conversation was processed once: one note in the CRM, the second run a duplicate
    conversation_id = events[0]["detail"]["conversation_id"]
    assert len(stack.notes_for(conversation_id)) == 1
    assert reports[0]["status"] == "processed"
    assert reports[1].get("duplicate") is True
    assert stack.parked() == []


# ---------------------------------------------------------------------------------------------- Amazon Connect


def test_a_connect_disconnected_event_is_put_on_the_bus(service: IngestService, ops_target: OpsTarget) -> None:
    event = sample("connect")
    report = service.handle_connect(event, lambda_context())
    assert report["status"] == "accepted"
    (delivered,) = ops_target.delivered()
    assert delivered["detail"] == mapped("connect", event)
    assert delivered["detail"]["conversation_id"] == event["detail"]["contactId"]


def test_other_connect_events_are_ignored(service: IngestService, ops_target: OpsTarget) -> None:
    event = sample("connect")
    event["detail"]["eventType"] = "CONNECTED_TO_AGENT"
    assert service.handle_connect(event)["status"] == "ignored"
    assert ops_target.delivered() == []


def test_an_unmappable_connect_event_is_parked_at_once_with_the_reason(
    service: IngestService, ops_target: OpsTarget
) -> None:
    # Given a DISCONNECTED event without a contact id (retrying cannot fix it)
    event = sample("connect")
    del event["detail"]["contactId"]
    report = service.handle_connect(event, lambda_context())
    # Then nothing is put; the event is parked as the handler parks what it refuses
    assert (report["status"], report["reason"]) == ("rejected", "missing_field")
    assert ops_target.delivered() == []
    (record,) = failed_records(ops_target)
    assert record["requestContext"]["condition"] == "RejectedByFunction"
    assert record["requestPayload"] == event
    assert "detail.contactId" in record["responsePayload"]["errorMessage"]


def test_a_connect_event_the_bus_refuses_is_parked_and_without_a_queue_raised(
    ops_target: OpsTarget, fault_proxy: FaultProxy
) -> None:
    fault_proxy.permanent_entry("InternalFailure")
    refusing = boto3.session.Session().client("events", endpoint_url=fault_proxy.url, region_name="us-east-1")
    event = sample("connect")
    parked = IngestService(settings_for(ops_target, None), events_client=refusing).handle_connect(event)
    assert parked["status"] == "parked"
    (record,) = failed_records(ops_target)
    assert record["requestPayload"]["detail"]["conversation_id"] == event["detail"]["contactId"]
    # Without a queue the event is raised, so Lambda's retries and OnFailure destination keep it
    unparked = IngestService(settings_for(ops_target, None, failed_events_queue_url=None), events_client=refusing)
    with pytest.raises(IngestUnavailableError):
        unparked.handle_connect(event)


# ---------------------------------------------------------------------------------------------- entry points


def load_app() -> ModuleType:
    """functions/ingest/app.py as Lambda loads it (fresh, so nothing is warm from another test)."""
    spec = importlib.util.spec_from_file_location(
        f"ingest_app_{uuid.uuid4().hex[:8]}", ROOT / "functions" / "ingest" / "app.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, ops_target: OpsTarget, secret_id: str) -> ModuleType:
    for name, value in {
        "STAGE": "sandbox",
        "EVENT_BUS_NAME": ops_target.bus,
        "EVENT_SOURCE": ops_target.source,
        "INGEST_SECRET_ID": secret_id,
        "FAILED_EVENTS_QUEUE_URL": ops_target.queue_url,
    }.items():
        monkeypatch.setenv(name, value)
    return load_app()


def function_url_event(request: WebhookRequest, *, base64_body: bool) -> dict[str, Any]:
    """The event a Lambda function URL delivers (payload format 2.0)."""
    body = base64.b64encode(request.body).decode() if base64_body else request.body.decode("utf-8")
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": request.path,
        "rawQueryString": "",
        "headers": {**request.headers, "host": "abcdefgh.lambda-url.us-east-1.on.aws"},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abcdefgh",
            "domainName": "abcdefgh.lambda-url.us-east-1.on.aws",
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "vendor",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": int(time.time() * 1000),
        },
        "body": body,
        "isBase64Encoded": base64_body,
    }


@pytest.mark.parametrize("base64_body", [False, True], ids=["text", "base64"])
def test_the_function_url_entry_point_verifies_the_body_exactly_as_received(
    base64_body: bool, app: ModuleType, ops_target: OpsTarget
) -> None:
    # Given an ElevenLabs webhook whose body has non-ASCII text and unusual spacing (signed as sent)
    payload = sample("elevenlabs")
    payload["data"]["analysis"]["transcript_summary"] = "Rückruf erwünscht — café ☕"
    body = json.dumps(payload, ensure_ascii=False, indent=3).encode("utf-8")
    event = function_url_event(webhook("elevenlabs", body), base64_body=base64_body)
    # When Lambda invokes the function URL handler
    answer = app.lambda_handler(event, lambda_context())
    # Then it answers 200 JSON and the event is on the bus with the text intact
    assert answer["statusCode"] == 200
    assert answer["headers"] == {"content-type": "application/json"}
    assert json.loads(answer["body"])["status"] == "accepted"
    (delivered,) = ops_target.delivered()
    assert delivered["detail"]["state"]["summary"] == "Rückruf erwünscht — café ☕"


def test_the_function_url_entry_point_refuses_a_body_that_is_not_base64(app: ModuleType, ops_target: OpsTarget) -> None:
    event = function_url_event(webhook("generic", encode(sample("generic"))), base64_body=False)
    event.update(isBase64Encoded=True, body="%%% not base64 %%%")
    answer = app.lambda_handler(event, lambda_context())
    assert (answer["statusCode"], json.loads(answer["body"])["error"]) == (400, "invalid_body_encoding")
    assert ops_target.delivered() == []


def test_the_connect_entry_point_takes_the_rules_event(app: ModuleType, ops_target: OpsTarget) -> None:
    report = app.connect_handler(sample("connect"), lambda_context())
    assert report["status"] == "accepted"
    assert len(ops_target.delivered()) == 1


# ---------------------------------------------------------------------------------------------- logs


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(runtime_logger.registered_formatter)
    underlying = logging.getLogger(runtime_logger.name)
    underlying.addHandler(handler)
    yield buffer
    underlying.removeHandler(handler)


def test_logs_carry_no_secret_signature_body_or_raw_number(
    service: IngestService, ops_target: OpsTarget, logs: io.StringIO
) -> None:
    # Given one accepted and one refused Vapi webhook
    body = encode(sample("vapi"))
    accepted = webhook("vapi", body)
    service.handle(accepted)
    service.handle(webhook("vapi", body, secret="wrong"))
    ops_target.delivered()
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    text = logs.getvalue()
    # Then the logs say what happened, keyed by platform and conversation ...
    assert any(line["message"] == "conversation ended event put on the bus" for line in lines)
    assert any(line.get("reason") == "signature_mismatch" for line in lines)
    # ... with the phone numbers masked and no secret, signature or payload text
    assert CUSTOMER_PHONE not in text
    assert "+141****0123" in text
    assert SECRETS["vapi"] not in text
    assert accepted.headers["x-signature"] not in text
    assert "Unable to login" not in text


# ---------------------------------------------------------------------------------------------- the template


@pytest.fixture(scope="module")
def expanded() -> dict[str, Any]:
    resources: dict[str, Any] = sam_transform(
        load_template(), {"Stage": "sandbox", "ConnectInstanceArn": "arn:aws:connect:us-east-1:123456789012:instance/i"}
    )["Resources"]
    return resources


def _statements(resources: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [s for p in resources[role]["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]


def test_the_ingest_url_is_public_and_its_role_least_privilege(expanded: dict[str, Any]) -> None:
    url = expanded["IngestFunctionUrl"]["Properties"]
    assert url["AuthType"] == "NONE"
    function = expanded["IngestFunction"]["Properties"]
    assert function["Handler"] == "app.lambda_handler"
    assert function["ReservedConcurrentExecutions"] == {"Ref": "IngestReservedConcurrency"}
    assert function["LoggingConfig"]["LogGroup"] == {"Ref": "IngestLogGroup"}
    log_group = expanded["IngestLogGroup"]["Properties"]
    assert log_group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert log_group["KmsKeyId"] == {"Fn::GetAtt": ["EncryptionKey", "Arn"]}
    granted = {
        (s["Action"], json.dumps(s["Resource"], sort_keys=True)) for s in _statements(expanded, "IngestFunctionRole")
    }
    assert {action for action, _ in granted} == {
        "events:PutEvents",
        "secretsmanager:GetSecretValue",
        "kms:Decrypt",  # the signing secret is encrypted with the stack's key
        "sqs:SendMessage",
    }
    assert ("kms:Decrypt", json.dumps({"Fn::GetAtt": ["EncryptionKey", "Arn"]}, sort_keys=True)) in granted
    assert ("secretsmanager:GetSecretValue", json.dumps({"Ref": "IngestSigningSecret"})) in granted
    assert ("sqs:SendMessage", json.dumps({"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}, sort_keys=True)) in granted
    assert all(resource != '"*"' for _, resource in granted)
    env = function["Environment"]["Variables"]
    assert env["INGEST_SECRET_ID"] == {"Ref": "IngestSigningSecret"}
    assert env["STAGE"] == {"Ref": "Stage"}


def test_connect_events_come_from_the_default_bus_for_one_instance(expanded: dict[str, Any]) -> None:
    (rule_name,) = [
        name
        for name, resource in expanded.items()
        if resource["Type"] == "AWS::Events::Rule" and name.startswith("ConnectIngestFunction")
    ]
    rule = expanded[rule_name]["Properties"]
    assert "EventBusName" not in rule  # the default bus, where Connect publishes
    assert rule["EventPattern"] == {
        "source": ["aws.connect"],
        "detail-type": ["Amazon Connect Contact Event"],
        "resources": [{"Ref": "ConnectInstanceArn"}],
        "detail": {"eventType": ["DISCONNECTED"]},
    }
    invoke = expanded["ConnectIngestFunctionEventInvokeConfig"]["Properties"]
    assert invoke["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}
    actions = {s["Action"] for s in _statements(expanded, "ConnectIngestFunctionRole")}
    assert actions == {"events:PutEvents", "sqs:SendMessage"}  # no secret: Connect events are not signed
    assert expanded["ConnectIngestFunction"]["Condition"] == "HasConnectInstance"


def test_the_outputs_give_the_url_and_the_secret() -> None:
    outputs = load_template()["Outputs"]
    assert outputs["IngestUrl"]["Value"] == {"Fn::GetAtt": ["IngestFunctionUrl", "FunctionUrl"]}
    assert outputs["IngestSecretArn"]["Value"] == {"Ref": "IngestSigningSecret"}


# ---------------------------------------------------------------------------------------------- configuration


def test_settings_come_from_the_environment_the_template_sets() -> None:
    env = {
        "STAGE": "live",
        "EVENT_BUS_NAME": "aftercall-live",
        "EVENT_SOURCE": "acme.voice",
        "INGEST_SECRET_ID": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:aftercall/live/ingest",
        "FAILED_EVENTS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/q",
        "INGEST_SECRET_MAX_AGE": "60",
    }
    settings = IngestSettings.from_env(env)
    assert (settings.stage, settings.bus_name, settings.event_source) == ("live", "aftercall-live", "acme.voice")
    assert settings.secret_max_age == 60
    assert IngestSettings.from_env({"STAGE": "sandbox", "EVENT_BUS_NAME": "b"}).secret_id is None


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"EVENT_BUS_NAME": "b"}, "STAGE"),
        ({"STAGE": "prod", "EVENT_BUS_NAME": "b"}, "STAGE='prod'"),
        ({"STAGE": "live"}, "EVENT_BUS_NAME"),
        ({"STAGE": "live", "EVENT_BUS_NAME": "b", "INGEST_MAX_BODY_BYTES": "1MB"}, "INGEST_MAX_BODY_BYTES"),
    ],
)
def test_a_missing_or_malformed_setting_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        IngestSettings.from_env(env)


def test_header_names_are_matched_ignoring_case() -> None:
    body = b'{"a":1}'
    headers = {name.upper(): value for name, value in signatures.sign_generic(body, "s", int(time.time())).items()}
    event = {"rawPath": "/generic", "requestContext": {"http": {"method": "post"}}, "headers": headers, "body": "x"}
    request = WebhookRequest.from_function_url(event)
    assert request.method == "POST"
    assert set(request.headers) == {"x-aftercall-signature"}
