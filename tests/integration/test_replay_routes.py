"""Replay knows which records each mode can hand back (issue 11, item 6).

The failed-events queue also holds the Connect ingest function's failures: Amazon Connect contact
events (``source: aws.connect``). PutEvents cannot put them back (EventBridge refuses ``aws.*``
sources from callers, and no rule of the stack would take them), and the End function does not
take them. Replay refuses such records with the way to replay them, and keeps them. The local
stack's PutEvents refuses ``aws.*`` sources as EventBridge does, so nothing looks fine locally that
fails in AWS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aftercall_ops.cli import app
from aftercall_ops.operations.replay import ReplayOptions, ReplayReport, replay
from tests.support.events import conversation_ended
from tests.support.ops import LambdaEndpoint, OpsTarget, on_failure_record

SAMPLES = Path(__file__).resolve().parents[2] / "events" / "vendor"


def _connect_event() -> dict[str, Any]:
    event: dict[str, Any] = json.loads((SAMPLES / "connect_disconnected.json").read_text(encoding="utf-8"))
    return event


def _seed(target: OpsTarget) -> dict[str, str]:
    """Two genuine failures and three records this stack's bus cannot take back: message id -> kind."""
    kinds = {
        "connect": _connect_event(),
        "foreign-source": conversation_ended(envelope={"source": "someone.else"}),
        "foreign-detail-type": conversation_ended(envelope={"detail-type": "Conversation Started"}),
    }
    seeded = {target.send(json.dumps(on_failure_record(event))): kind for kind, event in kinds.items()}
    target.seed_on_failure(2)
    return seeded


def _put_events(target: OpsTarget, **options: Any) -> ReplayReport:
    return replay(
        target.sqs(),
        target.queue_url,
        ReplayOptions(mode="put-events", **options),
        events=target.events(),
        bus=target.bus,
    )


def test_put_events_hands_back_only_this_stacks_events_and_keeps_the_rest(ops_target: OpsTarget) -> None:
    # Given two genuine failures, a Connect contact event, and two events that are not this stack's
    seeded = _seed(ops_target)
    # When replay puts events back on the stack's bus
    report = _put_events(ops_target, event_source=ops_target.source)
    # Then only the two genuine events went back
    assert report.summary() == {"replayed": 2, "failed_again": 0, "skipped": 3, "unrecognised": 0}
    assert len(ops_target.delivered()) == 2
    # And each refused record says why and how to replay it, and stays in the queue, visible
    skipped = {o.message_id: o.detail or "" for o in report.outcomes if o.action == "skipped"}
    assert set(skipped) == set(seeded)
    by_kind = {seeded[message_id]: detail for message_id, detail in skipped.items()}
    assert "aws.* source" in by_kind["connect"]
    assert "--mode invoke --function" in by_kind["connect"]
    assert "no rule would take it back" in by_kind["foreign-source"]
    assert "no rule would take it back" in by_kind["foreign-detail-type"]
    assert ops_target.depth() == (3, 0)


def test_put_events_without_a_known_source_still_refuses_aws_sources(ops_target: OpsTarget) -> None:
    # Given a Connect contact event's failure record, and no stack to tell this stack's source
    ops_target.send(json.dumps(on_failure_record(_connect_event())))
    # When replay runs with only a bus
    report = _put_events(ops_target)
    # Then the record is skipped and kept, not reported "replayed" and deleted
    assert report.summary()["skipped"] == 1
    assert report.summary()["replayed"] == 0
    assert ops_target.depth() == (1, 0)


def test_invoke_mode_gives_the_end_function_only_conversation_ended_events(ops_target: OpsTarget) -> None:
    # Given a Connect contact event's failure record and a genuine failure
    connect_id = ops_target.send(json.dumps(on_failure_record(_connect_event())))
    ops_target.seed_on_failure(1)
    received: list[str] = []

    def end_function(event: dict[str, Any]) -> tuple[Any, str | None]:
        received.append(str(event.get("source")))
        return {"status": "processed"}, None

    with LambdaEndpoint(end_function) as endpoint:
        # When replay invokes the stack's End function
        to_end = replay(
            ops_target.sqs(),
            ops_target.queue_url,
            ReplayOptions(mode="invoke", end_function=True),
            lambda_client=endpoint.client(),
            function="end-handler",
        )
        # Then the End function saw only the Conversation Ended event; the Connect record stays
        assert received == ["aftercall.platform"]
        assert [o.message_id for o in to_end.outcomes if o.action == "skipped"] == [connect_id]
        assert ops_target.depth() == (1, 0)
        # When the operator names the function the record belongs to
        to_connect = replay(
            ops_target.sqs(),
            ops_target.queue_url,
            ReplayOptions(mode="invoke"),
            lambda_client=endpoint.client(),
            function="connect-ingest",
        )
    # Then it is handed back there, and deleted
    assert to_connect.summary()["replayed"] == 1
    assert received == ["aftercall.platform", "aws.connect"]
    assert ops_target.depth() == (0, 0)


def test_the_cli_takes_the_stacks_own_source_from_its_outputs(ops_target: OpsTarget) -> None:
    # Given a record whose event has another source than the stack's EventSource output
    ops_target.send(json.dumps(on_failure_record(conversation_ended(envelope={"source": "someone.else"}))))
    # When the operator replays onto the stack's bus
    result = CliRunner().invoke(
        app, ["replay", "--stack", ops_target.stack_name, "--mode", "put-events", "--json"], catch_exceptions=False
    )
    # Then it is skipped with the reason and kept
    summary = json.loads(result.stdout)
    assert summary["summary"]["skipped"] == 1
    assert "'aftercall.platform'" in summary["messages"][0]["detail"]
    assert ops_target.depth() == (1, 0)


# ------------------------------------------------------------------------------------------ the local bus


@pytest.mark.parametrize("source", ["aws.connect", "aws.events", "aws.partner/x"])
def test_the_local_bus_refuses_aws_sources_as_eventbridge_does(ops_target: OpsTarget, source: str) -> None:
    # Given a batch with one entry from an AWS source and one of ours
    ours = conversation_ended()
    entries = [
        {"Source": source, "DetailType": "Conversation Ended", "Detail": json.dumps(ours["detail"])},
        {"Source": ours["source"], "DetailType": "Conversation Ended", "Detail": json.dumps(ours["detail"])},
    ]
    # When it is put on the bus
    answer = ops_target.events().put_events(Entries=[{**e, "EventBusName": ops_target.bus} for e in entries])
    # Then the AWS-sourced entry failed as in EventBridge, and only ours reached the rule
    assert answer["FailedEntryCount"] == 1
    refused, accepted = answer["Entries"]
    assert refused["ErrorCode"] == "NotAuthorizedForSourceException"
    assert "EventId" in accepted
    assert [e["source"] for e in ops_target.delivered()] == [ours["source"]]
