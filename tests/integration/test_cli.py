"""The ``aftercall`` command as an operator uses it: help, exit codes, specific errors, --json.

The first part runs the CLI against an ops target on the moto server. The second part drives the
whole loop on the local stack (real handler in worker processes, fake CRM): emit → dispatch →
CRM; a broken CRM → OnFailure records; status; replay in both modes; a dry run; a poison pass.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aftercall.crm.hubspot import marker
from aftercall.models.event import MAX_EVENT_BYTES
from aftercall_ops.cli import app
from aftercall_ops.emulator.stack import LocalStack
from aftercall_ops.generate import conversation
from tests.support.events import conversation_detail
from tests.support.ops import FaultProxy, OpsTarget, eventbridge_dlq_attributes, legacy_dlq_attributes


def run(*args: str, env: dict[str, str | None] | None = None, stdin: str | None = None) -> Any:
    """Invoke the CLI in-process; ``result.stdout``/``result.stderr`` are kept apart."""
    return CliRunner().invoke(
        app, list(args), env={"COLUMNS": "200", **(env or {})}, input=stdin, catch_exceptions=False
    )


def as_json(result: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# ------------------------------------------------------------------------------------------ help


@pytest.mark.parametrize(
    ("command", "phrases"),
    [
        ((), ["emit", "replay", "status", "local", "--stack NAME", "Exit codes"]),
        (("emit",), ["--generate", "--duplicates", "--dry-run", "256 KB", "batches of at most 10"]),
        (("replay",), ["--mode", "put-events", "new event id", "--dry-run", "--conversation-id", "--rate"]),
        (("status",), ["depth", "--peek", "Nothing is deleted"]),
        (("local",), ["template.yaml", "--parameter", "Ctrl-C"]),
        (("try",), ["no AWS", "--function", "--from", "masked", "Exit code 0"]),
        (("inspect",), ["idempotency record", "attempts", "timeline", "--hours", "Exit code 0"]),
    ],
)
def test_every_command_explains_itself(command: tuple[str, ...], phrases: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.stdout).split())
    for phrase in phrases:
        assert phrase in text, phrase


# ------------------------------------------------------------------------------------------ bad arguments


def test_stack_and_bus_together_are_refused(ops_target: OpsTarget) -> None:
    result = run("emit", "--stack", ops_target.stack_name, "--bus", ops_target.bus, "--generate", "1")
    assert result.exit_code == 2
    assert "pass either --stack or --bus, not both" in result.stderr


def test_a_ratio_out_of_range_is_refused_by_name() -> None:
    result = run("emit", "--bus", "b", "--generate", "5", "--duplicates", "1.5")
    assert result.exit_code == 2
    assert "--duplicates" in result.stderr
    assert "Invalid value for '--duplicates'" in result.stderr
    assert "less than or equal to 1" in result.stderr


def test_ratios_without_generate_are_refused() -> None:
    result = run("emit", "--bus", "b", "--invalid", "0.2", "events/minimal_valid.json")
    assert result.exit_code == 2
    assert "--duplicates, --invalid and --seed only apply with --generate N" in result.stderr


def test_a_missing_file_is_named(ops_target: OpsTarget, tmp_path: Path) -> None:
    result = run("emit", "--bus", ops_target.bus, str(tmp_path / "nope.json"))
    assert result.exit_code == 2
    assert "nope.json: no such file" in result.stderr


def test_a_malformed_stdin_line_is_named_by_its_number_and_nothing_is_sent(ops_target: OpsTarget) -> None:
    lines = [json.dumps(conversation_detail()), json.dumps(conversation_detail()), "{oops"]
    result = run("emit", "--bus", ops_target.bus, "--environment", "sandbox", "-", stdin="\n".join(lines) + "\n")
    assert result.exit_code == 2
    assert "stdin line 3: invalid JSON" in result.stderr
    assert ops_target.delivered() == []


def test_an_oversize_event_is_refused_and_nothing_is_sent(ops_target: OpsTarget, tmp_path: Path) -> None:
    # Given a file with one normal and one oversize event
    path = tmp_path / "calls.json"
    path.write_text(json.dumps([conversation_detail(), conversation_detail(state={"t": "x" * MAX_EVENT_BYTES})]))
    # When it is emitted
    result = run("emit", "--stack", ops_target.stack_name, str(path), "--json")
    # Then the command refuses with the entry, its size and the limit, and the bus saw nothing
    assert result.exit_code == 2
    error = as_json(result)["error"]
    assert "calls.json[1]: entry is " in error
    assert f"over EventBridge's {MAX_EVENT_BYTES:,}-byte limit" in error
    assert ops_target.delivered() == []


def test_an_unknown_stack_is_a_clear_error(ops_target: OpsTarget) -> None:
    result = run("status", "--stack", "no-such-stack")
    assert result.exit_code == 2
    assert "stack 'no-such-stack' does not exist in us-east-1" in result.stderr


def test_missing_credentials_are_a_clear_error() -> None:
    env: dict[str, str | None] = {
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
        "AWS_SESSION_TOKEN": None,
        "AWS_SECURITY_TOKEN": None,
        "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance metadata service
    }
    result = run("status", "--queue-url", "http://127.0.0.1:9/123456789012/q", env=env)
    assert result.exit_code == 2
    assert "no AWS credentials found" in result.stderr


def test_an_emit_dry_run_with_a_named_bus_needs_no_aws() -> None:
    # Given no credentials at all, and an endpoint nothing listens on
    env: dict[str, str | None] = {
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
        "AWS_SESSION_TOKEN": None,
        "AWS_SECURITY_TOKEN": None,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    # When a file is checked with --dry-run
    result = run("emit", "--bus", "b", "--environment", "sandbox", "--dry-run", "events/minimal_valid.json", env=env)
    # Then it is checked and nothing is sent
    assert result.exit_code == 0, result.stderr
    assert "dry run: 1 event(s) checked" in " ".join(result.stdout.split())


def test_a_stack_without_a_needed_output_says_which(ops_target: OpsTarget, moto_endpoint: str) -> None:
    # Given a stack that has a queue output but no function output
    name = f"partial-{uuid.uuid4().hex[:8]}"
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": name}}},
        "Outputs": {"FailedEventsQueueUrl": {"Value": ops_target.queue_url}},
    }
    ops_target.aws().client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))
    ops_target.seed_on_failure(1)
    # When an invoke replay is asked of it
    result = run("replay", "--stack", name, "--mode", "invoke")
    # Then the missing output and the flag to use instead are named
    assert result.exit_code == 2
    assert f"stack {name} has no EndHandlerFunctionName output" in result.stderr
    assert "pass --function NAME" in result.stderr


def test_local_refuses_a_malformed_parameter() -> None:
    result = run("local", "--parameter", "Stage")
    assert result.exit_code == 2
    assert "'Stage' is not Key=Value" in result.stderr


def test_nothing_to_emit_is_explained() -> None:
    result = run("emit", "--bus", "b", stdin="")
    assert result.exit_code == 2
    assert "the inputs hold no events" in result.stderr


# ------------------------------------------------------------------------------------------ against moto


def test_emit_resolves_the_stack_and_reports_json(ops_target: OpsTarget) -> None:
    result = run("emit", "--stack", ops_target.stack_name, "--generate", "25", "--seed", "4", "--json")
    assert result.exit_code == 0, result.stderr
    report = as_json(result)
    assert (report["ok"], report["accepted"], report["api_calls"], report["bus"]) == (True, 25, 3, ops_target.bus)
    delivered = ops_target.delivered()
    assert len(delivered) == 25
    assert {e["detail"]["environment"] for e in delivered} == {"sandbox"}  # the stack's Stage output


def test_emit_files_with_a_dry_run_sends_nothing(ops_target: OpsTarget) -> None:
    files = sorted(str(p) for p in Path("events").glob("*.json") if "invalid" not in p.name)
    result = run("emit", "--stack", ops_target.stack_name, "--dry-run", *files)
    assert result.exit_code == 0, result.stderr
    assert f"dry run: {len(files)} event(s) checked" in " ".join(result.stdout.split())
    assert ops_target.delivered() == []


def test_emit_exits_1_and_lists_entries_not_accepted(
    ops_target: OpsTarget, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    # Given a bus (behind the proxy) that refuses one conversation's event as malformed
    details = [conversation_detail() for _ in range(3)]
    fault_proxy.fail_conversations([details[1]["conversation_id"]], "MalformedDetail")
    path = tmp_path / "calls.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in details))
    # When they are emitted
    result = run(
        "emit", "--stack", ops_target.stack_name, str(path), env={"AWS_ENDPOINT_URL_EVENTBRIDGE": fault_proxy.url}
    )
    # Then the command fails and names that entry, its conversation and the error
    assert result.exit_code == 1
    text = " ".join(result.stdout.split())
    assert "2 of 3 event(s) accepted" in text
    assert "1 event(s) NOT accepted" in text
    assert details[1]["conversation_id"] in result.stdout
    assert "MalformedDetail" in result.stdout


def test_status_and_replay_through_the_cli(ops_target: OpsTarget) -> None:
    # Given three failed events and one unreadable message
    ops_target.seed_on_failure(3)
    ops_target.send("garbage")
    # When status runs, with and without --check
    status = run("status", "--stack", ops_target.stack_name, "--json")
    checked = run("status", "--stack", ops_target.stack_name, "--check")
    # Then it reports the depth and shapes, and --check exits 1 because the queue is not empty
    assert status.exit_code == 0
    assert as_json(status)["depth"] == 4
    assert as_json(status)["by_shape"] == {"lambda-on-failure": 3, "unrecognised": 1}
    assert checked.exit_code == 1
    assert "4 failed event(s)" in " ".join(checked.stdout.split())
    # When a dry run, then a put-events replay run
    dry = run("replay", "--stack", ops_target.stack_name, "--dry-run", "--json")
    real = run("replay", "--stack", ops_target.stack_name, "--mode", "put-events")
    # Then the dry run changed nothing, and the replay put three back and exits 1 for the unrecognised one
    assert dry.exit_code == 1  # an unrecognised message needs a human, even in a dry run
    assert as_json(dry)["summary"] == {
        "replayed": 0,
        "failed_again": 0,
        "skipped": 0,
        "unrecognised": 1,
        "would_replay": 3,
    }
    assert real.exit_code == 1
    summary = " ".join(real.stdout.split())
    assert "3 replayed, 0 failed again, 0 skipped, 1 unrecognised" in summary
    assert "Unrecognised messages were left in the queue untouched" in summary
    assert len(ops_target.delivered()) == 3
    assert ops_target.depth() == (1, 0)


# ------------------------------------------------------------------------------------------ the full loop


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A local stack for this module: the real handler in two worker processes, short retry delays."""
    with LocalStack(
        f"aftercall-cli-{uuid.uuid4().hex[:6]}",
        workers=2,
        function_timeout=20,
        retry_delays=(0.05, 0.1),
        state_dir=tmp_path_factory.mktemp("cli-local-stack"),
    ) as stack:
        yield stack


@pytest.fixture
def loop(local: LocalStack) -> Iterator[LocalStack]:
    """The local stack with a healthy CRM and an empty failed-events queue, before and after."""
    _empty_dlq(local)
    yield local
    local.crm.clear_faults()
    local.wait_idle(timeout=120)
    _empty_dlq(local)


def _empty_dlq(stack: LocalStack) -> None:
    """Delete whatever an earlier test left (PurgeQueue allows one call a minute, so receive and delete)."""
    sqs, url = stack.client("sqs"), stack.outputs["FailedEventsQueueUrl"]
    for _ in range(100):
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not batch:
            return
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        sqs.delete_message_batch(QueueUrl=url, Entries=entries)


def _cli(stack: LocalStack, *args: str) -> Any:
    return run(*args, env=dict(stack.env))


def _dlq_depth(stack: LocalStack) -> int:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.outputs["FailedEventsQueueUrl"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def _notes_per_conversation(stack: LocalStack, conversation_ids: set[str]) -> dict[str, int]:
    return {cid: len(stack.crm.notes_for(marker(cid))) for cid in conversation_ids}


def _emit_generated(stack: LocalStack, count: int, seed: int, *extra: str) -> set[str]:
    result = _cli(stack, "emit", "--generate", str(count), "--seed", str(seed), "--json", *extra)
    assert result.exit_code == 0, result.stderr
    assert as_json(result)["accepted"] == count
    stack.wait_idle(timeout=120)
    return {e.conversation_id or "" for e in _generated_ids(count, seed, extra)}


def _generated_ids(count: int, seed: int, extra: tuple[str, ...]) -> Any:
    from aftercall_ops.operations import emit

    flags = list(extra)
    duplicates = float(flags[flags.index("--duplicates") + 1]) if "--duplicates" in flags else 0.0
    items = emit.generated(count, seed=seed, duplicates=duplicates, invalid=0.0, environment="sandbox")
    return emit.prepare(items, bus="b", source=None, environment="sandbox")


def test_emitted_calls_are_processed_once_each_including_duplicates(loop: LocalStack) -> None:
    # Given generated calls, a fifth of them duplicate emissions
    seed = random.randrange(10**6)
    # When they are emitted through the CLI
    conversations = _emit_generated(loop, 30, seed, "--duplicates", "0.2")
    # Then every conversation has exactly one CRM note and nothing failed
    notes = _notes_per_conversation(loop, conversations)
    assert set(notes.values()) == {1}, (notes, as_json(_cli(loop, "status", "--json")), loop.counts())
    assert _dlq_depth(loop) == 0


@pytest.mark.parametrize("mode", ["invoke", "put-events"])
def test_crm_outage_then_replay_processes_everything_exactly_once(loop: LocalStack, mode: str) -> None:
    # Given a CRM that is down while calls end
    loop.crm.add_fault("status", status=503)
    conversations = _emit_generated(loop, 6, random.randrange(10**6))
    # Then every event ended in the failed-events queue as an OnFailure record, and status says so
    status = as_json(_cli(loop, "status", "--json"))
    assert status["depth"] == 6
    assert status["by_shape"] == {"lambda-on-failure": 6}
    assert status["by_error"] == {"ActionsFailedError [RetriesExhausted]": 6}
    # When a dry run looks, nothing changes
    dry = _cli(loop, "replay", "--dry-run", "--json")
    assert as_json(dry)["summary"]["would_replay"] == 6
    assert _dlq_depth(loop) == 6
    # When the CRM is healed and the queue replayed
    loop.crm.clear_faults()
    result = _cli(loop, "replay", "--mode", mode, "--json")
    loop.wait_idle(timeout=120)
    # Then all six were replayed, every conversation has exactly one note, and the queue is empty
    assert result.exit_code == 0, result.stdout
    assert as_json(result)["summary"] == {"replayed": 6, "failed_again": 0, "skipped": 0, "unrecognised": 0}
    assert set(_notes_per_conversation(loop, conversations).values()) == {1}
    assert _dlq_depth(loop) == 0


def test_a_replay_while_the_crm_is_still_down_reports_each_once_and_keeps_them(loop: LocalStack) -> None:
    # Given three failed events and a CRM that is still down
    loop.crm.add_fault("status", status=503)
    conversations = _emit_generated(loop, 3, random.randrange(10**6))
    # When both kinds of replay run
    invoked = _cli(loop, "replay", "--mode", "invoke", "--json")
    put_back = _cli(loop, "replay", "--mode", "put-events", "--json")
    loop.wait_idle(timeout=120)
    # Then invoke reports each as failed again, once, and keeps them
    assert invoked.exit_code == 1
    failed = [m for m in as_json(invoked)["messages"] if m["action"] == "failed-again"]
    assert sorted(m["conversation_id"] for m in failed) == sorted(conversations)
    assert all("ActionsFailedError" in m["detail"] for m in failed)
    # And put-events hands each back exactly once in its pass; the new failures are back in the queue
    replayed = [m["conversation_id"] for m in as_json(put_back)["messages"] if m["action"] == "replayed"]
    assert sorted(replayed) == sorted(conversations)
    status = as_json(_cli(loop, "status", "--json"))
    assert status["depth"] == 3
    assert {m["conversation_id"] for m in status["recent"]} == conversations
    assert _notes_per_conversation(loop, conversations) == dict.fromkeys(conversations, 0)


def test_hand_seeded_delivery_failures_and_legacy_messages_are_processed(loop: LocalStack) -> None:
    # Given a delivery failure (EventBridge target DLQ) and a legacy DLQ message, written by hand
    events: list[dict[str, Any]] = []
    for attributes in (eventbridge_dlq_attributes(), legacy_dlq_attributes()):
        detail = conversation(random.Random(), random.randrange(10**6), environment="sandbox")
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Conversation Ended",
            "source": loop.outputs["EventSource"],
            "account": "123456789012",
            "time": "2026-11-25T10:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": detail,
        }
        loop.client("sqs").send_message(
            QueueUrl=loop.outputs["FailedEventsQueueUrl"],
            MessageBody=json.dumps(event),
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
            },
        )
        events.append(event)
    # When the queue is replayed by invoking the function
    result = _cli(loop, "replay", "--mode", "invoke", "--json")
    # Then both shapes were recognised, processed by the real handler, and deleted
    assert result.exit_code == 0, result.stdout
    shapes = sorted(m["shape"] for m in as_json(result)["messages"] if m["action"] == "replayed")
    assert shapes == ["eventbridge-dlq", "lambda-dlq"]
    conversations = {e["detail"]["conversation_id"] for e in events}
    assert set(_notes_per_conversation(loop, conversations).values()) == {1}
    assert _dlq_depth(loop) == 0


def test_invalid_events_are_parked_at_once_and_a_replay_does_not_multiply_them(loop: LocalStack) -> None:
    # Given two events the contract refuses (the handler parks them itself, without retries)
    details = [conversation_detail(caller="555-CALL-ME"), conversation_detail(ended_reason="caller_sneezed")]
    stdin = "\n".join(json.dumps(d) for d in details) + "\n"
    emitted = run("emit", "-", "--json", env=dict(loop.env), stdin=stdin)
    assert emitted.exit_code == 0, emitted.stderr
    loop.wait_idle(timeout=120)
    status = as_json(_cli(loop, "status", "--json"))
    assert status["by_error"] == {"InvalidEventError [RejectedByFunction]": 2}
    # When they are replayed by invoking the function
    result = _cli(loop, "replay", "--mode", "invoke", "--json")
    # Then each is reported as failed again (re-parked), and the queue still holds one record each
    assert result.exit_code == 1
    failed = [m for m in as_json(result)["messages"] if m["action"] == "failed-again"]
    assert len(failed) == 2
    assert all("re-parked" in m["detail"] for m in failed)
    assert _dlq_depth(loop) == 2
