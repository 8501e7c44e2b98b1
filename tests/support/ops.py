"""Helpers for the operator-tool tests: an ops target on the moto server, and two small loopback peers.

* :class:`OpsTarget` — a bus, a failed-events queue, a rule that copies every ``Conversation
  Ended`` event to a "delivered" queue (so tests see what reached the bus), and a CloudFormation
  stack registered in moto whose outputs name them (so ``--stack`` resolves as in the cloud).
* :class:`FaultProxy` — an HTTP proxy in front of moto that can mark PutEvents entries as failed
  (``FailedEntries``) or stop answering after N calls: a hand-back target that breaks mid-replay.
* :class:`LambdaEndpoint` — a loopback server speaking the Lambda ``Invoke`` API, running a Python
  function per call (success, function error, a re-parked rejection, or too slow).

Every server binds 127.0.0.1 on port 0, so tests run in parallel under ``pytest -n 2``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3

from aftercall_ops.operations.targets import Aws
from tests.support.events import conversation_ended

PROXY_TIMEOUT = 10.0


def _client(service: str, endpoint: str) -> Any:
    return boto3.session.Session().client(service, endpoint_url=endpoint, region_name="us-east-1")  # type: ignore[call-overload]


@dataclass
class OpsTarget:
    """The AWS side of an aftercall stack, minus the function: bus, queues, rule, stack outputs."""

    endpoint: str
    stack_name: str
    bus: str
    queue_url: str
    delivered_url: str
    source: str = "aftercall.platform"
    stage: str = "sandbox"
    rules: list[str] = field(default_factory=list)

    def sqs(self) -> Any:
        return _client("sqs", self.endpoint)

    def events(self, endpoint: str | None = None) -> Any:
        return _client("events", endpoint or self.endpoint)

    def aws(self) -> Aws:
        return Aws(boto3.session.Session(region_name="us-east-1"))

    # ---------------------------------------------------------------- queue helpers
    def depth(self, url: str | None = None) -> tuple[int, int]:
        """(visible, not visible) of the failed-events queue (or ``url``)."""
        attributes = self.sqs().get_queue_attributes(
            QueueUrl=url or self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def drain(self, url: str | None = None, *, wait: int = 0) -> list[dict[str, Any]]:
        """Receive and delete every visible message; returns them with attributes (bounded)."""
        sqs = self.sqs()
        messages: list[dict[str, Any]] = []
        for _ in range(1000):
            batch = sqs.receive_message(
                QueueUrl=url or self.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=wait,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                return messages
            messages.extend(batch)
            sqs.delete_message_batch(
                QueueUrl=url or self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
            )
        raise AssertionError("queue did not drain within 1000 receives")

    def delivered(self) -> list[dict[str, Any]]:
        """The events that reached the bus's rule since the last call (drained)."""
        return [json.loads(message["Body"]) for message in self.drain(self.delivered_url)]

    def send(self, body: str, attributes: dict[str, str] | None = None) -> str:
        """Seed one message by hand (the shapes moto itself never produces)."""
        kwargs: dict[str, Any] = {"QueueUrl": self.queue_url, "MessageBody": body}
        if attributes:
            kwargs["MessageAttributes"] = {
                name: {"DataType": "Number" if value.lstrip("-").isdigit() else "String", "StringValue": value}
                for name, value in attributes.items()
            }
        return str(self.sqs().send_message(**kwargs)["MessageId"])

    def seed_on_failure(self, count: int, **overrides: Any) -> list[dict[str, Any]]:
        """``count`` Lambda OnFailure records (function error after retries), returns their events."""
        events = [conversation_ended(**overrides) for _ in range(count)]
        sqs = self.sqs()
        for start in range(0, count, 10):
            chunk = events[start : start + 10]
            sqs.send_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "MessageBody": json.dumps(on_failure_record(e))} for i, e in enumerate(chunk)],
            )
        return events

    def add_poison_rule(self) -> None:
        """A second rule whose "consumer" always fails: it writes an OnFailure record into the DLQ.

        Built from an InputTransformer, so each delivery carries the real, new event (and id) that
        PutEvents created: exactly what a failing async Lambda target would leave behind.
        """
        name = f"poison-{uuid.uuid4().hex[:8]}"
        template = (
            '{"version":"1.0","timestamp":"2026-01-01T00:00:00.000Z","requestContext":{"requestId":"r",'
            '"functionArn":"arn:aws:lambda:us-east-1:123456789012:function:poison","condition":"RetriesExhausted",'
            '"approximateInvokeCount":3},"requestPayload":<aws.events.event.json>,"responseContext":'
            '{"statusCode":200,"executedVersion":"$LATEST","functionError":"Unhandled"},'
            '"responsePayload":{"errorType":"PoisonError","errorMessage":"fails every time"}}'
        )
        events = self.events()
        events.put_rule(
            Name=name, EventBusName=self.bus, EventPattern=json.dumps({"detail-type": ["Conversation Ended"]})
        )
        events.put_targets(
            Rule=name,
            EventBusName=self.bus,
            Targets=[
                {
                    "Id": "dlq",
                    "Arn": _queue_arn(self.sqs(), self.queue_url),
                    "InputTransformer": {"InputPathsMap": {}, "InputTemplate": template},
                }
            ],
        )
        self.rules.append(name)


def create_ops_target(endpoint: str) -> OpsTarget:
    """A fresh bus, DLQ, delivered-events queue, rule and CloudFormation stack, all unique."""
    suffix = uuid.uuid4().hex[:10]
    sqs = _client("sqs", endpoint)
    events = _client("events", endpoint)
    bus = f"aftercall-ops-{suffix}"
    events.create_event_bus(Name=bus)
    queue_url = str(sqs.create_queue(QueueName=f"failed-events-{suffix}")["QueueUrl"])
    delivered_url = str(sqs.create_queue(QueueName=f"delivered-{suffix}")["QueueUrl"])
    rule = f"conversation-ended-{suffix}"
    events.put_rule(
        Name=rule,
        EventBusName=bus,
        EventPattern=json.dumps({"detail-type": ["Conversation Ended"], "source": ["aftercall.platform"]}),
    )
    events.put_targets(
        Rule=rule,
        EventBusName=bus,
        Targets=[
            {
                "Id": "delivered",
                "Arn": _queue_arn(sqs, delivered_url),
                "InputTransformer": {"InputPathsMap": {}, "InputTemplate": "<aws.events.event.json>"},
            }
        ],
    )
    stack_name = f"aftercall-test-{suffix}"
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": f"alarms-{suffix}"}}},
        "Outputs": {
            "Stage": {"Value": "sandbox"},
            "EventSource": {"Value": "aftercall.platform"},
            "EventBusName": {"Value": bus},
            "FailedEventsQueueUrl": {"Value": queue_url},
            "EndHandlerFunctionName": {"Value": f"end-handler-{suffix}"},
            "EndHandlerTimeoutSeconds": {"Value": "5"},
        },
    }
    _client("cloudformation", endpoint).create_stack(StackName=stack_name, TemplateBody=json.dumps(template))
    return OpsTarget(endpoint, stack_name, bus, queue_url, delivered_url, rules=[rule])


def delete_ops_target(target: OpsTarget) -> None:
    """Remove what :func:`create_ops_target` made (best effort: the moto server is per process)."""
    cloudformation = _client("cloudformation", target.endpoint)
    events = target.events()
    sqs = target.sqs()
    with contextlib.suppress(Exception):
        cloudformation.delete_stack(StackName=target.stack_name)
    for name in target.rules:
        with contextlib.suppress(Exception):
            events.remove_targets(Rule=name, EventBusName=target.bus, Ids=["delivered", "dlq"])
        with contextlib.suppress(Exception):
            events.delete_rule(Name=name, EventBusName=target.bus)
    for url in (target.queue_url, target.delivered_url):
        with contextlib.suppress(Exception):
            sqs.delete_queue(QueueUrl=url)


def _queue_arn(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def on_failure_record(
    event: dict[str, Any],
    *,
    error_type: str = "ActionsFailedError",
    message: str = "crm_note failed: CrmUnavailableError: HubSpot answered 503",
    condition: str = "RetriesExhausted",
    attempts: int = 3,
) -> dict[str, Any]:
    """A Lambda OnFailure destination record, in the shape AWS writes it."""
    return {
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:aftercall-EndHandler:$LATEST",
            "condition": condition,
            "approximateInvokeCount": attempts,
        },
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorType": error_type, "errorMessage": message},
    }


def eventbridge_dlq_attributes(rule: str = "aftercall-conversation-ended") -> dict[str, str]:
    """The attributes EventBridge puts on a rule target's DLQ message."""
    return {
        "RULE_ARN": f"arn:aws:events:us-east-1:123456789012:rule/aftercall-sandbox/{rule}",
        "TARGET_ARN": "arn:aws:lambda:us-east-1:123456789012:function:aftercall-EndHandler",
        "ERROR_CODE": "SDK_CLIENT_ERROR",
        "ERROR_MESSAGE": "Unable to invoke Lambda function: Rate Exceeded.",
        "EXHAUSTED_RETRY_CONDITION": "MaximumRetryAttemptsExhausted",
        "RETRY_ATTEMPTS": "8",
    }


def legacy_dlq_attributes() -> dict[str, str]:
    """The attributes Lambda puts on a legacy function dead-letter queue message."""
    return {
        "RequestID": str(uuid.uuid4()),
        "ErrorCode": "200",
        "ErrorMessage": "Task timed out after 60.00 seconds",
    }


# ------------------------------------------------------------------------------------------ fault proxy


class FaultProxy:
    """A loopback HTTP proxy in front of moto that injects PutEvents faults.

    ``fail_entries(calls, code)`` makes every second entry of the next ``calls`` PutEvents answers
    come back as a failed entry with ``code`` (the call itself still reaches moto for the rest).
    ``permanent_entry(code)`` fails the first entry of every answer with ``code``;
    ``fail_conversations(ids, code)`` fails every entry for those conversations. ``stop_after(n)``
    lets n PutEvents calls through, then answers every further one with HTTP 503.
    """

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.lock = threading.Lock()
        self.put_events_calls = 0
        self.failing_calls = 0
        self.failure_code = "ThrottlingException"
        self.permanent_code: str | None = None
        self.doomed: dict[str, str] = {}
        self.stop_after_calls: int | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                target = self.headers.get("X-Amz-Target", "")
                status, headers, payload = proxy.forward(self.path, dict(self.headers), body, target)
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)

    def fail_entries(self, calls: int, code: str = "ThrottlingException") -> None:
        with self.lock:
            self.failing_calls, self.failure_code = calls, code

    def permanent_entry(self, code: str) -> None:
        with self.lock:
            self.permanent_code = code

    def fail_conversations(self, conversation_ids: Iterable[str], code: str = "ThrottlingException") -> None:
        with self.lock:
            self.doomed.update(dict.fromkeys(conversation_ids, code))

    def stop_after(self, calls: int) -> None:
        with self.lock:
            self.stop_after_calls = self.put_events_calls + calls

    def forward(
        self, path: str, headers: dict[str, str], body: bytes, target: str
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        is_put = target.endswith(".PutEvents")
        with self.lock:
            if is_put:
                self.put_events_calls += 1
                if self.stop_after_calls is not None and self.put_events_calls > self.stop_after_calls:
                    error = {"__type": "ServiceUnavailable", "message": "proxy: the hand-back target stopped answering"}
                    return 503, [("Content-Type", "application/x-amz-json-1.1")], json.dumps(error).encode()
                failing = self.failing_calls > 0
                if failing:
                    self.failing_calls -= 1
                code, permanent, doomed = self.failure_code, self.permanent_code, dict(self.doomed)
        request: dict[str, Any] = json.loads(body) if is_put else {}
        entries = request.get("Entries", [])
        forced: dict[int, str] = {}
        if is_put:
            for index, entry in enumerate(entries):
                conversation_id = json.loads(entry.get("Detail") or "{}").get("conversation_id")
                if conversation_id in doomed:
                    forced[index] = doomed[conversation_id]
                elif permanent and index == 0:
                    forced[index] = permanent
                elif failing and index % 2 == 1:
                    forced[index] = code
            request["Entries"] = [entry for index, entry in enumerate(entries) if index not in forced]
            body = json.dumps(request).encode()
        connection = http.client.HTTPConnection(*self.upstream, timeout=PROXY_TIMEOUT)
        try:
            forward_headers = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")}
            if is_put and not request["Entries"]:
                status, response_headers, payload = 200, [("Content-Type", "application/x-amz-json-1.1")], b"{}"
            else:
                connection.request("POST", path, body=body, headers=forward_headers)
                response = connection.getresponse()
                status, response_headers, payload = response.status, response.getheaders(), response.read()
        finally:
            connection.close()
        if is_put and forced and status == 200:
            answered = iter(json.loads(payload or b"{}").get("Entries", []))
            results: list[dict[str, Any]] = []
            for index in range(len(entries)):
                if index in forced:
                    results.append({"ErrorCode": forced[index], "ErrorMessage": f"proxy injected {forced[index]}"})
                else:
                    results.append(next(answered, {"ErrorCode": "InternalFailure", "ErrorMessage": "no answer"}))
            failed = sum(1 for result in results if "ErrorCode" in result)
            payload = json.dumps({"FailedEntryCount": failed, "Entries": results}).encode()
        return status, response_headers, payload

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


# ------------------------------------------------------------------------------------------ lambda endpoint

#: A function behind the endpoint: event in, (payload, function error type or None) out.
LambdaFunction = Callable[[dict[str, Any]], tuple[Any, str | None]]


class LambdaEndpoint:
    """A loopback server for ``POST /2015-03-31/functions/{name}/invocations`` (Lambda Invoke).

    It answers like Lambda: the function's return value as the payload, or its error payload with
    an ``X-Amz-Function-Error`` header. ``delay`` makes every call slow (to exceed a read timeout).
    """

    def __init__(self, function: LambdaFunction) -> None:
        self.function = function
        self.delay = 0.0
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not self.path.startswith("/2015-03-31/functions/") or not self.path.endswith("/invocations"):
                    self.send_response(404)
                    self.end_headers()
                    return
                event = json.loads(body)
                with endpoint.lock:
                    endpoint.calls.append(event)
                if endpoint.delay:
                    time.sleep(endpoint.delay)
                payload, error = endpoint.function(event)
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Amz-Executed-Version", "$LATEST")
                if error:
                    self.send_header("X-Amz-Function-Error", error)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="lambda-endpoint", daemon=True)

    def client(self, read_timeout: float = 10.0) -> Any:
        """A Lambda client for this endpoint built the way replay builds it: one attempt, bounded wait."""
        aws = Aws(boto3.session.Session(region_name="us-east-1"))
        return aws.client("lambda", read_timeout=read_timeout, max_attempts=1, endpoint_url=self.url)

    def __enter__(self) -> LambdaEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class CallCounter:
    """Counts the AWS API calls a client makes (a botocore ``before-call`` hook), by operation."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-call.*.*", self._count)
        return client

    def _count(self, model: Any, **_: Any) -> None:
        with self.lock:
            self.calls[model.name] = self.calls.get(model.name, 0) + 1

    def __getitem__(self, operation: str) -> int:
        with self.lock:
            return self.calls.get(operation, 0)

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.calls.values())
