"""The local stack runs the real pipeline: EventBridge rule → real handler in its own process → CRM / DLQ.

Everything here talks to real peers on loopback (moto server, the fake CRM, the handler in a
worker process, the Invoke endpoint over HTTP). Names, the rule's pattern and the retry settings
are asserted against :func:`stack_spec`, never against copied values.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from aftercall.crm.hubspot import marker
from aftercall.ingest.signatures import sign_generic
from aftercall_ops.emulator.stack import LocalStack
from aftercall_ops.emulator.template import load_template, stack_spec
from aftercall_ops.generate import conversation

EVENTBRIDGE_ENVELOPE = {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}

#: The first run of this End function hangs past the function timeout; later runs finish.
HANGS_ONCE = '''
"""Test End function: the first attempt hangs (Lambda must kill it), the retry succeeds."""
import os
import time
from pathlib import Path


def end_function(conv):
    marker = Path(conv.state.get("hang_marker"))
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(60)
    conv.actions.log_summary({"conversation_id": conv.id, "note": "finished on the retry"})
'''

#: An End function with a bug: it raises on every run.
RAISES = '''
"""Test End function with a bug."""


def end_function(conv):
    raise KeyError("caller_name")
'''

#: An End function that plans a follow-up SMS in an hour and a notification to the team.
FOLLOWS_UP = '''
"""Test End function: a follow-up SMS in an hour, and a notification."""
from datetime import UTC, datetime, timedelta


def end_function(conv):
    conv.actions.schedule_follow_up(datetime.now(UTC) + timedelta(hours=1), "Thanks for calling us today.")
    conv.actions.notify("Call ended", {"conversation": conv.id})
'''

#: An End function that signals it started, then holds until the test releases it.
HOLDS = '''
"""Test End function: runs until the test lets it finish."""
import time
from pathlib import Path


def end_function(conv):
    Path(conv.state.get("started_marker")).write_text("started")
    release = Path(conv.state.get("release_marker"))
    for _ in range(600):
        if release.exists():
            break
        time.sleep(0.05)
    conv.actions.log_summary({"conversation_id": conv.id})
'''

#: An End function that does not even import.
BROKEN = "def end_function(conv)\n    pass\n"


def new_detail(environment: str = "sandbox", **state: Any) -> dict[str, Any]:
    """A realistic conversation with a customer the fake CRM knows, with a fresh id."""
    detail = conversation(random.Random(uuid.uuid4().int), random.randrange(10**6), environment=environment)
    detail["state"].update(state)
    return detail


def envelope(detail: dict[str, Any], source: str) -> dict[str, Any]:
    """The event as EventBridge delivers it (for direct invocations)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Conversation Ended",
        "source": source,
        "account": "123456789012",
        "time": "2026-11-25T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }


def put_event(stack: LocalStack, detail: dict[str, Any], source: str | None = None) -> str:
    """Send a Conversation Ended event to the stack's bus, as the platform would; returns its id."""
    answer = stack.client("events").put_events(
        Entries=[
            {
                "EventBusName": stack.outputs["EventBusName"],
                "Source": source or stack.outputs["EventSource"],
                "DetailType": "Conversation Ended",
                "Detail": json.dumps(detail),
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0, answer
    return str(answer["Entries"][0]["EventId"])


def failed_event_records(stack: LocalStack, conversation_id: str) -> list[dict[str, Any]]:
    """The failed-events queue's records for one conversation (other records stay in the queue)."""
    sqs = stack.client("sqs")
    found = []
    for _ in range(5):
        answer = sqs.receive_message(
            QueueUrl=stack.outputs["FailedEventsQueueUrl"], MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        messages = answer.get("Messages", [])
        if not messages:
            break
        for message in messages:
            body = json.loads(message["Body"])
            if body.get("requestPayload", {}).get("detail", {}).get("conversation_id") == conversation_id:
                found.append(body)
                sqs.delete_message(
                    QueueUrl=stack.outputs["FailedEventsQueueUrl"], ReceiptHandle=message["ReceiptHandle"]
                )
            else:
                sqs.change_message_visibility(
                    QueueUrl=stack.outputs["FailedEventsQueueUrl"],
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=0,
                )
    return found


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before.get(key, 0) for key in after}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One running local stack for this module's tests (Stage=sandbox), with short retry delays."""
    with LocalStack(
        f"aftercall-test-{uuid.uuid4().hex[:6]}",
        workers=2,
        function_timeout=10,
        retry_delays=(0.05, 0.1),
        state_dir=tmp_path_factory.mktemp("local-stack"),
    ) as local:
        yield local


@pytest.fixture
def crm_faults_cleared(stack: LocalStack) -> Iterator[None]:
    yield
    stack.crm.clear_faults()


def test_resources_are_created_from_the_template(stack: LocalStack) -> None:
    # Given the template's wiring for this stack name and Stage
    spec = stack_spec(stack.stack_name, {"Stage": "sandbox"})
    events, sqs = stack.client("events"), stack.client("sqs")

    # When we look at what the local stack created in moto
    rule = events.describe_rule(Name=spec.rule_name, EventBusName=spec.bus_name)
    targets = events.list_targets_by_rule(Rule=spec.rule_name, EventBusName=spec.bus_name)["Targets"]
    queue = sqs.get_queue_attributes(QueueUrl=stack.outputs["FailedEventsQueueUrl"], AttributeNames=["All"])
    table = stack.client("dynamodb").describe_table(TableName=stack.outputs["IdempotencyTableName"])["Table"]
    secret = stack.client("secretsmanager").get_secret_value(SecretId=stack.outputs["CrmSecretArn"])

    # Then bus, rule and pattern are the template's, and the target delivers the whole event
    assert events.describe_event_bus(Name=spec.bus_name)["Name"] == spec.bus_name
    assert json.loads(rule["EventPattern"]) == spec.event_pattern
    assert rule["State"] == "ENABLED"
    (target,) = targets
    assert target["InputTransformer"] == {"InputPathsMap": {}, "InputTemplate": "<aws.events.event.json>"}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == spec.rule_max_retry_attempts
    assert target["DeadLetterConfig"]["Arn"] == stack.outputs["FailedEventsQueueArn"]
    # And the failed-events queue, table and secret are what the template and the handler expect
    assert queue["Attributes"]["QueueArn"].endswith(":" + spec.failed_events_queue_name)
    assert int(queue["Attributes"]["MessageRetentionPeriod"]) == spec.failed_events_retention_seconds
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert json.loads(secret["SecretString"])["access_token"] == stack.crm.token
    assert len(stack.crm.contacts) >= 200  # every customer of the synthetic directory


def test_describe_stacks_returns_the_template_outputs(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a client configured only by the stack's environment, as `aftercall --stack NAME` is
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    cloudformation = boto3.session.Session().client("cloudformation")

    # When it resolves the stack by name
    described = cloudformation.describe_stacks(StackName=stack.env["AFTERCALL_STACK"])["Stacks"][0]
    outputs = {item["OutputKey"]: item["OutputValue"] for item in described["Outputs"]}

    # Then it sees exactly the template's output keys, with the local values
    spec = stack_spec(stack.stack_name, {"Stage": "sandbox"})
    assert set(outputs) == set(load_template()["Outputs"])
    assert outputs == stack.outputs
    assert outputs["EventBusName"] == spec.bus_name
    assert outputs["ConversationEndedRuleName"] == spec.rule_name
    assert outputs["Stage"] == spec.stage
    assert outputs["EventSource"] == spec.event_source
    assert outputs["FailedEventsQueueUrl"].endswith("/" + spec.failed_events_queue_name)
    assert outputs["EndHandlerFunctionArn"].endswith(":function:" + outputs["EndHandlerFunctionName"])
    assert int(outputs["EndHandlerTimeoutSeconds"]) >= stack.function_timeout
    topics = boto3.session.Session().client("sns").list_topics()["Topics"]
    assert {"TopicArn": outputs["AlarmTopicArn"]} in topics


def test_an_event_on_the_bus_is_processed_by_the_real_handler(stack: LocalStack) -> None:
    # Given a conversation with a customer the CRM knows
    detail = new_detail()
    before = stack.counts()

    # When the platform puts its Conversation Ended event on the bus
    put_event(stack, detail)
    stack.wait_idle(timeout=60)

    # Then the handler ran once in a worker and wrote one note to the CRM
    notes = stack.crm.notes_for(marker(detail["conversation_id"]))
    assert len(notes) == 1
    assert delta(before, stack.counts())["succeeded"] == 1
    assert delta(before, stack.counts())["sent_to_dlq"] == 0
    # And its JSON logs (keyed by conversation id) are in the log file, not on the terminal
    logged = [r for r in stack.log_records() if r.get("conversation_id") == detail["conversation_id"]]
    assert any(r.get("message") == "conversation ended" for r in logged)


def test_an_event_for_which_the_crm_always_fails_ends_as_an_on_failure_record(
    stack: LocalStack, crm_faults_cleared: None
) -> None:
    # Given a CRM that answers every request with 503
    stack.crm.add_fault("status", status=503)
    detail = new_detail()
    before = stack.counts()
    spec = stack_spec(stack.stack_name, {"Stage": "sandbox"})

    # When the event arrives and every attempt fails
    event_id = put_event(stack, detail)
    stack.wait_idle(timeout=90)

    # Then Lambda's retries were used up and the failed-events queue holds the OnFailure record
    (record,) = failed_event_records(stack, detail["conversation_id"])
    attempts = 1 + spec.function_max_retry_attempts
    assert set(record) == {
        "version",
        "timestamp",
        "requestContext",
        "requestPayload",
        "responseContext",
        "responsePayload",
    }
    assert record["version"] == "1.0"
    assert record["timestamp"].endswith("Z")
    context = record["requestContext"]
    assert context["condition"] == "RetriesExhausted"
    assert context["approximateInvokeCount"] == attempts
    assert context["functionArn"] == stack.outputs["EndHandlerFunctionArn"] + ":$LATEST"
    # And the payload is the event exactly as EventBridge delivered it
    payload = record["requestPayload"]
    assert set(payload) == EVENTBRIDGE_ENVELOPE
    assert payload["id"] == event_id
    assert payload["detail"] == detail
    assert payload["source"] == spec.event_source
    assert payload["detail-type"] == "Conversation Ended"
    assert payload["account"] == "123456789012"
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    response = record["responsePayload"]
    assert response["errorType"] == "ActionsFailedError"
    assert response["requestId"] == context["requestId"]
    assert isinstance(response["stackTrace"], list)
    assert response["errorMessage"]
    # And nothing was written, and every attempt was counted
    assert stack.crm.notes_for(marker(detail["conversation_id"])) == []
    counted = delta(before, stack.counts())
    assert counted["invocations"] == attempts
    assert counted["failed_attempts"] == attempts
    assert counted["sent_to_dlq"] == 1


def test_the_invoke_endpoint_returns_the_handler_result(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a boto3 Lambda client configured only by the stack's environment (AWS_ENDPOINT_URL_LAMBDA)
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    lambda_client = boto3.session.Session().client("lambda")
    detail = new_detail()
    event = envelope(detail, stack.outputs["EventSource"])

    # When the event is handed to the function directly (replay --mode invoke)
    answer = lambda_client.invoke(FunctionName=stack.outputs["EndHandlerFunctionName"], Payload=json.dumps(event))

    # Then Lambda's answer carries the handler's report
    assert answer["StatusCode"] == 200
    assert "FunctionError" not in answer
    result = json.loads(answer["Payload"].read())
    assert result["conversation_id"] == detail["conversation_id"]
    assert result["status"] == "processed"
    assert len(stack.crm.notes_for(marker(detail["conversation_id"]))) == 1


def test_the_invoke_endpoint_reports_a_function_error_like_lambda(stack: LocalStack, crm_faults_cleared: None) -> None:
    # Given a CRM that fails every request, and the function addressed by its ARN
    stack.crm.add_fault("status", status=503)
    lambda_client = stack.client("lambda")
    event = envelope(new_detail(), stack.outputs["EventSource"])

    # When it is invoked synchronously
    answer = lambda_client.invoke(FunctionName=stack.outputs["EndHandlerFunctionArn"], Payload=json.dumps(event))

    # Then the call succeeds at the HTTP level and reports the function's unhandled error
    assert answer["StatusCode"] == 200
    assert answer["FunctionError"] == "Unhandled"
    error = json.loads(answer["Payload"].read())
    assert error["errorType"] == "ActionsFailedError"
    assert error["errorMessage"]
    # And another function name is not ours
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.invoke(FunctionName="someone-elses-function", Payload=b"{}")


def test_a_signed_webhook_to_the_ingest_url_ends_as_a_crm_note(stack: LocalStack) -> None:
    # Given the stack's ingest URL and the generic scheme's signing key from its secret
    signing_key = json.loads(
        stack.client("secretsmanager").get_secret_value(SecretId=stack.outputs["IngestSecretArn"])["SecretString"]
    )["generic"]
    detail = new_detail()
    body = json.dumps(detail).encode()

    # When a sender POSTs a signed Conversation Ended detail to it
    request = urllib.request.Request(
        stack.outputs["IngestUrl"] + "generic",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **sign_generic(body, signing_key, int(time.time()))},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        status, answer = response.status, json.loads(response.read())

    # Then the function URL accepts it, and the whole loop (bus, rule, EndHandler) writes the CRM note
    assert status == 200, answer
    assert answer["status"] == "accepted"
    assert answer["conversation_id"] == detail["conversation_id"]
    stack.wait_idle(timeout=60)
    assert len(stack.crm.notes_for(marker(detail["conversation_id"]))) == 1


def test_the_rule_follows_the_template_parameters(tmp_path: Path) -> None:
    # Given a stack whose parameters change the stage and the event source
    parameters = {"Stage": "live", "EventSource": "acme.voice-agents"}
    spec = stack_spec("aftercall-test-params", parameters)
    with LocalStack("aftercall-test-params", parameters, workers=1, retry_delays=(0.05,), state_dir=tmp_path) as local:
        events = local.client("events")
        rule = events.describe_rule(Name=spec.rule_name, EventBusName=spec.bus_name)

        # Then the bus, the rule and its pattern follow them
        assert spec.bus_name == "aftercall-live"
        assert json.loads(rule["EventPattern"]) == spec.event_pattern
        assert spec.event_pattern["source"] == ["acme.voice-agents"]
        assert spec.event_pattern["detail"]["environment"] == ["live"]
        assert local.outputs["EventSource"] == "acme.voice-agents"

        # When events with the old and the new source arrive
        stale, fresh = new_detail("live"), new_detail("live")
        put_event(local, stale, source="aftercall.platform")
        put_event(local, fresh)
        local.wait_idle(timeout=60)

        # Then only the new source reaches the handler
        assert local.counts()["invocations"] == 1
        assert local.crm.notes_for(marker(fresh["conversation_id"]))
        assert not local.crm.notes_for(marker(stale["conversation_id"]))


def test_a_function_past_its_timeout_is_killed_and_retried(tmp_path: Path) -> None:
    # Given an End function whose first run hangs, and a short function timeout
    end_function = tmp_path / "hangs_once.py"
    end_function.write_text(HANGS_ONCE)
    hang_marker = tmp_path / "hung-pid"
    with LocalStack(
        "aftercall-test-timeout",
        {"Stage": "live"},
        workers=1,
        function_timeout=2,
        retry_delays=(0.05,),
        end_function=str(end_function),
        state_dir=tmp_path / "state",
    ) as local:
        detail = new_detail("live", hang_marker=str(hang_marker))

        # When its event arrives
        put_event(local, detail)
        local.wait_idle(timeout=90)

        # Then the first attempt timed out, its process was killed, and a fresh one ran the retry
        counts = local.counts()
        assert counts["timeouts"] == 1
        assert counts["invocations"] == 2
        assert counts["succeeded"] == 1
        assert counts["sent_to_dlq"] == 0
        assert counts["cold_starts"] == 2
        hung_pid = int(hang_marker.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(hung_pid, 0)
        assert len(local.crm.notes_for(marker(detail["conversation_id"]))) == 1
        reports = [r["record"] for r in local.log_records() if r.get("type") == "platform.report"]
        assert [r["status"] for r in reports] == ["timeout", "success"]
        assert reports[0]["errorType"] == "Sandbox.Timedout"
        assert "Task timed out after 2.00 seconds" in reports[0]["errorMessage"]


def test_stop_ends_every_process_and_thread_it_started(tmp_path: Path) -> None:
    # Given a running stack that has served an invocation (so an environment process exists)
    local = LocalStack("aftercall-test-stop", {"Stage": "live"}, workers=2, state_dir=tmp_path).start()
    try:
        outcome = local.invoke({"not": "an event"})
        assert outcome.ok  # the handler parks what is not an event and returns a report
        pids = local.worker_pids()
        assert pids
    finally:
        # When it stops
        local.stop()

    # Then no environment process and no thread of it is left
    time.sleep(0.1)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("aftercall-test-stop")]


def test_an_event_older_than_the_maximum_event_age_is_not_retried(tmp_path: Path) -> None:
    # Given an End function that always raises, and a retry that would start after the event's maximum age
    end_function = tmp_path / "raises.py"
    end_function.write_text(RAISES)
    with LocalStack(
        "aftercall-test-age",
        {"Stage": "live"},
        workers=1,
        retry_delays=(1.5,),
        max_event_age=1.0,
        end_function=str(end_function),
        state_dir=tmp_path / "state",
    ) as local:
        detail = new_detail("live")

        # When its event arrives
        event_id = put_event(local, detail)
        local.wait_idle(timeout=60)

        # Then it ran once, and the retry found it too old: an EventAgeExceeded record with the last error
        (record,) = failed_event_records(local, detail["conversation_id"])
        assert record["requestContext"]["condition"] == "EventAgeExceeded"
        assert record["requestContext"]["approximateInvokeCount"] == 1
        assert record["requestPayload"]["id"] == event_id
        assert record["responsePayload"]["errorType"] == "EndFunctionError"
        assert "KeyError" in record["responsePayload"]["errorMessage"]
        assert local.counts()["invocations"] == 1


def test_an_end_function_that_does_not_import_is_reported_as_lambdas_init_error(tmp_path: Path) -> None:
    # Given an End function with a syntax error
    end_function = tmp_path / "broken.py"
    end_function.write_text(BROKEN)
    with LocalStack(
        "aftercall-test-import", {"Stage": "live"}, workers=1, end_function=str(end_function), state_dir=tmp_path
    ) as local:
        # When the function is invoked
        outcome = local.invoke({"any": "event"})

        # Then the invocation fails as Lambda's does when the handler module cannot be imported
        assert not outcome.ok
        assert outcome.error is not None
        assert outcome.error["errorType"] == "Runtime.ImportModuleError"
        assert outcome.error["errorMessage"].startswith("Unable to import module 'app'")
        assert local.worker_pids() == []  # nothing stays warm after a failed init


def test_follow_ups_and_notifications_reach_the_local_resources_and_the_follow_up_function(tmp_path: Path) -> None:
    # Given an End function that schedules a follow-up SMS and notifies the team
    end_function = tmp_path / "follows_up.py"
    end_function.write_text(FOLLOWS_UP)
    with LocalStack(
        "aftercall-test-follow-up",
        {"Stage": "live"},
        workers=1,
        end_function=str(end_function),
        state_dir=tmp_path / "state",
    ) as local:
        detail = new_detail("live")

        # When the End function runs for a conversation
        outcome = local.invoke(envelope(detail, local.outputs["EventSource"]))

        # Then both actions succeeded against the stack's own schedule group and topic
        assert outcome.ok, outcome.error
        actions = outcome.result["actions"]
        assert {name: action["status"] for name, action in actions.items()} == {
            "follow_up:sms": "done",
            "notification:team": "done",
        }
        scheduler = local.client("scheduler")
        group = local.outputs["FollowUpScheduleGroupName"]
        (summary,) = scheduler.list_schedules(GroupName=group)["Schedules"]
        schedule = scheduler.get_schedule(GroupName=group, Name=summary["Name"])
        follow_up_function = local.outputs["FollowUpFunctionName"]
        assert schedule["Target"]["Arn"].endswith(":function:" + follow_up_function)

        # And when the schedule's payload is handed to the FollowUp function (as Scheduler would, or replay)
        answer = local.client("lambda").invoke(FunctionName=follow_up_function, Payload=schedule["Target"]["Input"])

        # Then that function runs in its own environment and sends the SMS
        assert answer["StatusCode"] == 200
        assert "FunctionError" not in answer, answer["Payload"].read()
        sent = json.loads(answer["Payload"].read())
        assert sent["kind"] == "sms"
        assert local.counts(follow_up_function)["succeeded"] == 1


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_a_duplicate_that_arrives_while_the_original_runs_is_retried_after_it_not_parked(tmp_path: Path) -> None:
    # Given a CRM that takes 3 s to create a note, and two environments (the End function plans
    # before the conversation's record is taken: "runs" is the original performing its actions)
    with LocalStack(
        "aftercall-test-duplicate",
        {"Stage": "live"},
        workers=2,
        retry_delays=(0.05, 0.1),
        state_dir=tmp_path / "state",
    ) as local:
        local.crm.add_fault("latency", method="POST", path="/crm/v3/objects/notes", ms=3000)
        detail = new_detail("live")
        put_event(local, detail)
        wait_for(lambda: bool(local.crm.requests_to("POST", "/crm/v3/objects/notes")), "the original to send its note")

        # When the platform emits the same conversation again while the original still runs
        put_event(local, detail)
        wait_for(lambda: bool(waiting_for_twin(local)), "the duplicate to find its twin in progress and wait")
        local.wait_idle(timeout=60)

        # Then the duplicate waited for its twin inside its own invocation and found it done:
        # no failed attempt, nothing parked, one note
        counts = local.counts()
        assert counts["sent_to_dlq"] == 0
        assert counts["failed_attempts"] == 0
        assert counts["succeeded"] == 2
        assert counts["invocations"] == 2
        assert len(local.crm.notes_for(marker(detail["conversation_id"]))) == 1
        assert any("already processed" in str(r.get("message")) for r in local.log_records())


def waiting_for_twin(local: LocalStack) -> list[dict[str, Any]]:
    return [r for r in local.log_records() if "waiting for it to finish" in str(r.get("message"))]


def test_in_flight_lists_every_event_not_finished_yet(tmp_path: Path) -> None:
    # Given one environment busy with an event that holds, and more events arriving behind it
    end_function = tmp_path / "holds.py"
    end_function.write_text(HOLDS)
    started, release = tmp_path / "started", tmp_path / "release"
    with LocalStack(
        "aftercall-test-in-flight",
        {"Stage": "live"},
        workers=1,
        retry_delays=(0.05, 0.1),
        end_function=str(end_function),
        state_dir=tmp_path / "state",
        end_handler_environment={"CRM_READ_TIMEOUT_SECONDS": "2"},
    ) as local:
        details = [new_detail("live", started_marker=str(started), release_marker=str(release)) for _ in range(4)]
        put_event(local, details[0])
        wait_for(started.exists, "the first invocation to start")
        for detail in details[1:]:
            put_event(local, detail)

        # When the events in flight are listed (running, waiting for the environment, or still queued)
        listed = local.in_flight()

        # Then each is there once; and listing took nothing away: all are processed afterwards
        assert sorted(event["detail"]["conversation_id"] for event in listed) == sorted(
            detail["conversation_id"] for detail in details
        )
        release.write_text("go")
        local.wait_idle(timeout=60)
        assert local.in_flight() == []
        assert local.counts()["succeeded"] == 4
        # And the EndHandler got the extra environment variable it was given
        assert local.function_environment["CRM_READ_TIMEOUT_SECONDS"] == "2"
