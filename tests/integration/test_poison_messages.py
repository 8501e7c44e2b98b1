"""Operator tools against poison messages in the failed-events queue (issue 11, item 4).

Anyone who can send to the queue (or a bug upstream) can leave a message no tool expects: not
JSON, nested 50,000 deep, an integer of 5,000 digits, text that is not valid Unicode, a record of
another service. ``aftercall status`` and ``aftercall replay`` must classify each as unrecognised,
report it once, keep it (visible again at once, so the DLQ alarm still counts it) and carry on with
the genuine events around it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aftercall_ops.cli import app
from aftercall_ops.operations.dlq import classify
from aftercall_ops.operations.replay import ReplayOptions, replay
from tests.support.events import conversation_ended
from tests.support.ops import LambdaEndpoint, OpsTarget, eventbridge_dlq_attributes, on_failure_record

_DEEP = 50_000


def _deep_event() -> str:
    """A genuine-looking record whose state nests 50,000 lists deep."""
    record = json.dumps(on_failure_record(conversation_ended()))
    return record.replace('"state": {', '"state": {"deep": ' + "[" * _DEEP + "]" * _DEEP + ", ", 1)


def _lone_surrogate_event() -> str:
    """A record whose event holds an escaped lone surrogate: valid JSON, not encodable as UTF-8."""
    return json.dumps(on_failure_record(conversation_ended(state={"note": "\ud800"})))


POISON: dict[str, str] = {
    "not-json": "this is not JSON at all",
    "deep-array": "[" * _DEEP + "]" * _DEEP,
    "deep-object": '{"a":' * _DEEP + "1" + "}" * _DEEP,
    "deep-event": _deep_event(),
    "huge-integer": "1" * 5_000,
    "lone-surrogate": _lone_surrogate_event(),
    "binary-as-base64": "AAECAwQFBgcICQoLDA0ODxAREhP/////3q2+7w==",
    "unrelated-record": json.dumps({"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": "x"}}}]}),
    "empty": " ",
}


def _message(body: str, attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"MessageId": "m-1", "ReceiptHandle": "r-1", "Body": body, "MessageAttributes": attributes or {}}


@pytest.mark.parametrize("kind", sorted(POISON))
def test_every_poison_body_is_classified_unrecognised_with_a_reason(kind: str) -> None:
    # Given a poison body, When it is classified
    failed = classify(_message(POISON[kind]))
    # Then it is unrecognised, says why in one bounded line, and offers nothing to hand back
    assert failed.shape == "unrecognised"
    assert failed.event is None
    assert failed.problem
    assert len(failed.error) < 300


def test_a_poison_body_with_eventbridge_attributes_is_still_unrecognised() -> None:
    attributes = {
        name: {"DataType": "String", "StringValue": value} for name, value in eventbridge_dlq_attributes().items()
    }
    failed = classify(_message(POISON["deep-array"], attributes))
    assert failed.shape == "unrecognised"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.text(max_size=300) | _json.map(json.dumps), record=st.booleans())
def test_classify_never_raises(body: str, record: bool) -> None:
    # Given any text, or any JSON value as a body or as a record's requestPayload
    text = json.dumps({"requestContext": {}, "requestPayload": json.loads(body)}) if record and _is_json(body) else body
    # When it is classified, Then an answer comes back (recognised or not), never an exception
    failed = classify(_message(text))
    assert failed.recognised == (failed.event is not None)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------------ replay


def _seed(target: OpsTarget, kinds: list[str]) -> tuple[list[str], dict[str, str]]:
    genuine = [e["detail"]["conversation_id"] for e in target.seed_on_failure(3)]
    poison = {target.send(POISON[kind]): kind for kind in kinds}
    return genuine, poison


@pytest.mark.parametrize("mode", ["put-events", "invoke"])
def test_replay_carries_on_past_poison_messages_and_keeps_them_visible(ops_target: OpsTarget, mode: str) -> None:
    # Given three genuine failures and every kind of poison message in the failed-events queue
    genuine, poison = _seed(ops_target, sorted(POISON))
    # When one replay pass runs
    with LambdaEndpoint(lambda event: ({"status": "processed"}, None)) as endpoint:
        report = replay(
            ops_target.sqs(),
            ops_target.queue_url,
            ReplayOptions(mode="put-events" if mode == "put-events" else "invoke", concurrency=2),
            events=ops_target.events(),
            bus=ops_target.bus,
            lambda_client=endpoint.client(),
            function="end-handler",
        )
    # Then the genuine events were all handed back, and the pass was not aborted
    assert report.aborted is None, report.aborted
    assert sorted(o.conversation_id or "" for o in report.outcomes if o.action == "replayed") == sorted(genuine)
    # And each poison message was reported once as unrecognised, with a reason
    unrecognised = [o for o in report.outcomes if o.action == "unrecognised"]
    assert sorted(o.message_id for o in unrecognised) == sorted(poison)
    assert all(o.detail for o in unrecognised)
    # And every poison message is still there and visible at once (the DLQ alarm keeps counting it)
    assert ops_target.depth() == (len(poison), 0)


def test_status_reports_poison_messages_without_a_traceback(ops_target: OpsTarget) -> None:
    # Given genuine failures and poison messages
    _, poison = _seed(ops_target, sorted(POISON))
    # When an operator asks for the status, in JSON and as text
    runner = CliRunner()
    as_json = runner.invoke(app, ["status", "--queue-url", ops_target.queue_url, "--json"], catch_exceptions=False)
    as_text = runner.invoke(
        app, ["status", "--queue-url", ops_target.queue_url], env={"COLUMNS": "200"}, catch_exceptions=False
    )
    # Then both answer, counting the poison as unrecognised
    assert as_json.exit_code == 0, as_json.stderr
    assert json.loads(as_json.stdout)["by_shape"] == {"lambda-on-failure": 3, "unrecognised": len(poison)}
    assert as_text.exit_code == 0, as_text.stderr
    assert "unrecognised" in as_text.stdout
    assert "Traceback" not in as_text.stdout + as_text.stderr
    # And every message is visible again at once
    assert ops_target.depth() == (3 + len(poison), 0)
