"""Metrics for reporting: the EMF blobs the End handler prints per conversation and per action.

CloudWatch turns each EMF line Lambda prints into metrics; these tests read the same lines from
stdout and check names, dimensions, units and values, and that the dashboard in template.yaml
searches for exactly the dimension sets that are emitted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from aftercall.conversation import Conversation
from aftercall.errors import ActionsFailedError
from aftercall_ops.emulator.template import load_template
from end_function import end_function
from tests.support.events import (
    RESOLVED_STATE,
    conversation_ended,
    outbound_call_ended,
    re_emitted,
    support_call_ended,
)
from tests.support.lambda_context import lambda_context
from tests.support.stack import HandlerPeers

TICKET_CREATE = "/crm/v3/objects/tickets$"
CONVERSATION_METRICS = ("Conversations", "ConversationDuration")
ACTION_METRICS = ("ActionSucceeded", "ActionFailed", "ActionAlreadyDone")


@dataclass(frozen=True)
class Datapoint:
    """One metric value from an EMF blob, with the dimensions CloudWatch files it under."""

    namespace: str
    name: str
    unit: str
    value: float
    dimensions: dict[str, str]


def emitted(stdout: str) -> list[Datapoint]:
    """Every metric datapoint in the EMF lines of ``stdout``."""
    points = []
    for line in stdout.splitlines():
        if not line.startswith('{"_aws"'):
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:  # each set files every metric of the directive once
                dimensions = {name: blob[name] for name in dimension_set}
                for metric in directive["Metrics"]:
                    values = blob[metric["Name"]]
                    for value in values if isinstance(values, list) else [values]:
                        points.append(
                            Datapoint(directive["Namespace"], metric["Name"], metric["Unit"], value, dimensions)
                        )
    return points


def _by(points: list[Datapoint], name: str, dimension: str) -> dict[str, float]:
    """``{dimension value: sum}`` of metric ``name``'s datapoints that carry ``dimension``."""
    sums: dict[str, float] = {}
    for point in points:
        if point.name == name and dimension in point.dimensions:
            sums[point.dimensions[dimension]] = sums.get(point.dimensions[dimension], 0) + point.value
    return sums


def _run(
    stack: HandlerPeers,
    capsys: pytest.CaptureFixture[str],
    event: dict[str, Any],
    function: Callable[[Conversation], object] = end_function,
) -> list[Datapoint]:
    capsys.readouterr()
    stack.runtime().handle(event, lambda_context(), function)
    return [p for p in emitted(capsys.readouterr().out) if p.name in CONVERSATION_METRICS + ACTION_METRICS]


# --- per conversation -----------------------------------------------------------------------------


def test_a_conversation_is_counted_by_direction_environment_resolution_and_sentiment(
    stack: HandlerPeers, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an unresolved inbound support call with a negative sentiment
    event = support_call_ended()
    # When the handler processes it
    points = _run(stack, capsys, event)
    # Then it is counted once under each dimension, in the Aftercall namespace
    assert _by(points, "Conversations", "Direction") == {"inbound": 1}
    assert _by(points, "Conversations", "Environment") == {"sandbox": 1}
    assert _by(points, "Conversations", "Resolution") == {"unresolved": 1}
    assert _by(points, "Conversations", "Sentiment") == {"negative": 1}
    assert {p.namespace for p in points} == {"Aftercall"}
    assert {p.unit for p in points if p.name == "Conversations"} == {"Count"}


def test_a_conversation_records_its_duration_in_seconds_by_direction(
    stack: HandlerPeers, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an outbound call that lasted 95.5 seconds
    event = outbound_call_ended(duration_seconds=95.5)
    # When the handler processes it
    points = _run(stack, capsys, event)
    # Then one duration datapoint of 95.5 s is filed under the outbound direction
    (duration,) = [p for p in points if p.name == "ConversationDuration"]
    assert duration.unit == "Seconds"
    assert duration.value == 95.5
    assert duration.dimensions["Direction"] == "outbound"


@pytest.mark.parametrize(
    ("state", "resolution", "sentiment"),
    [
        ({"sentiment": "Quite happy, I think :)", "resolution": "kinda sorted?"}, "other", "other"),
        ({"sentiment": "  POSITIVE ", "resolution": "Escalated"}, "escalated", "positive"),
        ({"resolved": True}, "resolved", "unknown"),
        ({"resolved": False, "sentiment": ""}, "unresolved", "unknown"),
        ({"sentiment": {"score": 0.9}, "resolution": ["resolved"]}, "other", "other"),
        ({}, "unknown", "unknown"),
    ],
    ids=["free-text", "known-words-any-case", "resolved-flag", "unresolved-flag", "not-text", "absent"],
)
def test_free_text_is_capped_to_a_small_vocabulary(
    stack: HandlerPeers,
    capsys: pytest.CaptureFixture[str],
    state: dict[str, Any],
    resolution: str,
    sentiment: str,
) -> None:
    # Given a conversation whose state carries this resolution and sentiment
    event = conversation_ended(state=state)
    # When the handler processes it
    points = _run(stack, capsys, event)
    # Then the dimensions are words of the fixed vocabulary ("other"/"unknown" for anything else),
    # so free text cannot create new CloudWatch metrics
    assert _by(points, "Conversations", "Resolution") == {resolution: 1}
    assert _by(points, "Conversations", "Sentiment") == {sentiment: 1}


def test_a_state_with_nested_objects_is_summarised_and_counted(
    stack: HandlerPeers, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a call whose state holds objects where the repo's end_function reads words
    # (conv.state.get returns a read-only view for an object, which is not JSON by itself)
    event = conversation_ended(state={"sentiment": {"label": "positive", "score": 0.9}, "last_topic": ["a", "b"]})
    # When the handler processes it
    points = _run(stack, capsys, event)
    # Then the summary note holds the objects as plain data, and the sentiment is counted as "other"
    (note,) = stack.notes_for(event["detail"]["conversation_id"])
    assert "{&#x27;label&#x27;: &#x27;positive&#x27;, &#x27;score&#x27;: 0.9}" in note["properties"]["hs_note_body"]
    assert _by(points, "Conversations", "Sentiment") == {"other": 1}


def test_a_conversation_is_counted_once_across_a_failed_attempt_its_retry_and_a_duplicate(
    stack: HandlerPeers, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a support call whose ticket the CRM refuses once
    stack.crm.add_fault("status", method="POST", path=TICKET_CREATE, status=400, times=1)
    event = support_call_ended()
    runtime = stack.runtime()
    capsys.readouterr()
    # When the handler fails it, Lambda retries it, and the platform emits it again
    with pytest.raises(ActionsFailedError):
        runtime.handle(event, lambda_context(), end_function)
    runtime.handle(event, lambda_context(), end_function)
    runtime.handle(re_emitted(event), lambda_context(), end_function)
    points = emitted(capsys.readouterr().out)
    # Then the conversation is counted once, with one duration
    assert _by(points, "Conversations", "Direction") == {"inbound": 1}
    assert len([p for p in points if p.name == "ConversationDuration"]) == 1


# --- per action -----------------------------------------------------------------------------------


def test_each_action_reports_success_or_failure_by_action(
    stack: HandlerPeers, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a support call whose ticket the CRM refuses once, handled by the repo's end_function
    stack.crm.add_fault("status", method="POST", path=TICKET_CREATE, status=400, times=1)
    event = support_call_ended()
    runtime = stack.runtime()
    capsys.readouterr()
    # When the handler processes it and Lambda retries it
    with pytest.raises(ActionsFailedError):
        runtime.handle(event, lambda_context(), end_function)
    first = emitted(capsys.readouterr().out)
    runtime.handle(event, lambda_context(), end_function)
    retry = emitted(capsys.readouterr().out)
    # Then the first attempt reports the summary's success and the ticket's failure ...
    assert _by(first, "ActionSucceeded", "Action") == {"crm_summary": 1}
    assert _by(first, "ActionFailed", "Action") == {"support_ticket": 1}
    # ... and the retry the ticket's success, the summary being already done
    assert _by(retry, "ActionSucceeded", "Action") == {"support_ticket": 1}
    assert _by(retry, "ActionAlreadyDone", "Action") == {"crm_summary": 1}
    assert _by(retry, "ActionFailed", "Action") == {}


def test_keyed_actions_are_reported_by_kind_not_by_key(stack: HandlerPeers, capsys: pytest.CaptureFixture[str]) -> None:
    # Given an End function that sends two notifications with their own keys, without a topic
    def two_notifications(conv: Conversation) -> None:
        conv.actions.notify("Hot lead", key=f"sales-{conv.id}")
        conv.actions.notify("Escalation", key=f"support-{conv.id}")

    # When the handler processes a call
    capsys.readouterr()
    with pytest.raises(ActionsFailedError):
        stack.runtime(notifications_topic_arn=None).handle(outbound_call_ended(), lambda_context(), two_notifications)
    points = emitted(capsys.readouterr().out)
    # Then both failures are filed under one Action value (keys would multiply the metric count)
    assert _by(points, "ActionFailed", "Action") == {"notification": 2}


# --- the dashboard shows what is emitted ----------------------------------------------------------


def _dashboard_searches() -> list[tuple[str, frozenset[str], str]]:
    """``(namespace, dimension names, metric name)`` of every SEARCH in the template's dashboard."""
    body = load_template()["Resources"]["Dashboard"]["Properties"]["DashboardBody"]
    text = body["Fn::Sub"] if isinstance(body, dict) else body
    searches = []
    for schema, metric in re.findall(r"SEARCH\('\{([^}]*)\} MetricName=\\\"(\w+)\\\"'", text):
        namespace, *dimensions = [part.strip() for part in schema.split(",")]
        searches.append((namespace, frozenset(dimensions), metric))
    return searches


def test_the_dashboard_searches_for_the_dimension_sets_that_are_emitted(
    stack: HandlerPeers, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the dashboard's SEARCH expressions (CloudWatch matches a schema's dimension set exactly)
    searches = _dashboard_searches()
    assert {metric for _, _, metric in searches} >= {
        "Conversations",
        "ConversationDuration",
        "ActionSucceeded",
        "ActionFailed",
    }
    # When the handler processes a call whose ticket fails (so every searched metric is emitted)
    stack.crm.add_fault("status", method="POST", path=TICKET_CREATE, status=400, times=1)
    capsys.readouterr()
    with pytest.raises(ActionsFailedError):
        stack.runtime().handle(support_call_ended(), lambda_context(), end_function)
    points = emitted(capsys.readouterr().out)
    points += _run(stack, capsys, conversation_ended(state=dict(RESOLVED_STATE)))
    # Then every search finds datapoints: same namespace, same metric, exactly its dimension set
    for namespace, dimensions, metric in searches:
        found = [p for p in points if (p.namespace, p.name, frozenset(p.dimensions)) == (namespace, metric, dimensions)]
        assert found, f"the dashboard searches {namespace}/{metric} by {sorted(dimensions)}; nothing emitted matches"
