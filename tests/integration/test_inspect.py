"""``aftercall inspect`` against the local stack: the real handler wrote the records it reads.

CloudWatch Logs is moto's: the test ships the handler's own JSON log lines into the stack's log
group as Lambda would, and moto answers the Logs Insights query (it ignores the filter, so the
command's own check that each line belongs to the conversation is exercised too).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from aftercall_ops.cli import app
from aftercall_ops.emulator.stack import LocalStack
from aftercall_ops.operations.targets import Aws, resolve_target
from tests.support.events import support_call_ended


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        f"aftercall-inspect-{uuid.uuid4().hex[:6]}",
        workers=1,
        function_timeout=20,
        retry_delays=(0.05, 0.1),
        state_dir=tmp_path_factory.mktemp("inspect-local-stack"),
    ) as stack:
        yield stack


def emit(stack: LocalStack, event: dict[str, Any]) -> None:
    entry = {
        "EventBusName": stack.outputs["EventBusName"],
        "Source": event["source"],
        "DetailType": event["detail-type"],
        "Detail": json.dumps(event["detail"]),
    }
    assert stack.client("events").put_events(Entries=[entry])["FailedEntryCount"] == 0
    stack.wait_idle(timeout=120)


def ship_logs(stack: LocalStack) -> None:
    """What Lambda does with the function's stdout: the JSON lines into its log group."""
    logs = stack.client("logs")
    group = f"/aftercall/{stack.stack_name}/end-handler"
    if not logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
        logs.create_log_group(logGroupName=group)
    stream = uuid.uuid4().hex
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    events = [
        {"timestamp": now, "message": json.dumps({**record, **trace_of(record)})} for record in stack.log_records()
    ]
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)


def trace_of(record: dict[str, Any]) -> dict[str, str]:
    """In Lambda, Powertools adds the invocation's X-Ray trace id to each line; one per invocation here."""
    request = record.get("function_request_id")
    return {"xray_trace_id": f"1-67891233-{request.replace('-', '')[:24]}"} if request else {}


def inspect(stack: LocalStack, conversation_id: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        app, ["inspect", conversation_id, "--json"], env={**stack.env, "COLUMNS": "200"}, catch_exceptions=False
    )
    return result.exit_code, json.loads(result.stdout)


def test_a_processed_call_shows_its_record_each_action_with_its_crm_object_and_its_log_lines(
    local: LocalStack,
) -> None:
    # Given two support calls processed by the stack
    first, other = support_call_ended(), support_call_ended()
    emit(local, first)
    emit(local, other)
    ship_logs(local)
    conversation_id = first["detail"]["conversation_id"]
    # When the first is inspected
    code, story = inspect(local, conversation_id)
    # Then it was processed, and each action completed once with the CRM object it made
    assert code == 0, story
    assert story["ok"] is True
    assert story["idempotency"]["status"] == "COMPLETED"
    actions = {a["action"]: a for a in story["actions"]}
    assert set(actions) == {"crm_summary", "support_ticket"}
    assert {a["status"] for a in actions.values()} == {"COMPLETED"}
    assert {a["attempts"] for a in actions.values()} == {1}
    (note,) = local.crm.notes_for(f"aftercall-{conversation_id}")
    assert actions["crm_summary"]["result"]["object_id"] == str(note["id"])
    # And its log lines are in the timeline, none of the other call's
    texts = [entry["text"].split("] ", 1)[-1] for entry in story["timeline"] if entry["source"].startswith("log")]
    assert "conversation ended" in texts
    assert any(text.startswith("action done action=support_ticket") for text in texts)
    # And they are placed at the time the handler logged them, in order
    times = [entry["at"] for entry in story["timeline"] if entry["source"].startswith("log")]
    assert times == sorted(times)
    assert len(set(times)) > 1
    # And the X-Ray trace of its invocation is named, to open the whole path in the console
    (trace,) = story["xray_traces"]
    assert trace.startswith("1-67891233-")
    other_id = other["detail"]["conversation_id"]
    assert all(other_id not in json.dumps(entry) for entry in story["timeline"])
    # And the lines carry what the template's saved "slowest actions" query reads: action and seconds
    done = [r for r in local.log_records() if r.get("message") == "action done"]
    assert done
    assert all(isinstance(r.get("seconds"), float) and r.get("action") for r in done)


def test_a_call_whose_crm_was_down_shows_the_failed_action_and_its_failed_events_message(local: LocalStack) -> None:
    # Given a call that ended while the CRM answered 503 to everything
    local.crm.add_fault("status", status=503)
    try:
        event = support_call_ended()
        emit(local, event)
    finally:
        local.crm.clear_faults()
    conversation_id = event["detail"]["conversation_id"]
    # When it is inspected
    code, story = inspect(local, conversation_id)
    # Then the exit code is 1, the actions are FAILED after Lambda's three attempts, and the
    # OnFailure record waiting in the failed-events queue is listed, in the timeline too
    assert code == 1
    assert {a["status"] for a in story["actions"]} == {"FAILED"}
    assert {a["attempts"] for a in story["actions"]} == {3}
    (message,) = story["failed_events"]
    assert message["shape"] == "lambda-on-failure"
    assert any(entry["source"] == "failed-events" for entry in story["timeline"])
    assert any("crm_summary is FAILED after 3 attempt(s)" in problem for problem in story["problems"])
    # And its error lines carry what the saved "failures by reason" query parses: "<ErrorClass>: ..."
    failed = [r for r in local.log_records() if r.get("message") == "action failed"]
    assert failed
    assert all(re.match(r"^[A-Za-z]+: ", r["error"]) and r["level"] == "ERROR" for r in failed)


def test_an_unknown_conversation_exits_1_saying_nothing_was_found(local: LocalStack) -> None:
    # When a conversation the stack never saw is inspected
    code, story = inspect(local, f"conv-never-{uuid.uuid4().hex[:8]}")
    # Then it says so and exits 1
    assert code == 1
    assert story["problems"] == ["nothing found: no record, no action, no failed event, no log line in the window"]


def test_an_id_the_contract_refuses_is_a_usage_error(local: LocalStack) -> None:
    # When the id could not be a conversation id (and would otherwise reach a log query)
    result = CliRunner().invoke(app, ["inspect", 'x" or 1=1', "--json"], env=dict(local.env))
    # Then it is refused before any call
    assert result.exit_code == 2
    assert "is not a conversation id" in result.stdout


def test_operator_commands_invoke_the_alias_the_rule_uses_not_latest(
    local: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an operator's shell with the local stack's environment
    for name, value in local.env.items():
        monkeypatch.setenv(name, value)
    aws = Aws()
    # When a command resolves the stack, Then the function it invokes is qualified with the alias
    # the rule uses (EndHandlerAliasName), not $LATEST
    target = resolve_target(aws, stack=local.stack_name)
    assert target.function_name == f"{local.outputs['EndHandlerFunctionName']}:current"
    # And the local stack serves that alias like AWS does
    answer = aws.client("lambda").invoke(FunctionName=target.function_name, Payload=json.dumps(support_call_ended()))
    assert answer["StatusCode"] == 200
    assert "FunctionError" not in answer
