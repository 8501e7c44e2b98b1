"""Metrics for reporting (EMF): what happened to each conversation and action, in one log line.

Dimension values come from small fixed vocabularies, so a free-text ``sentiment`` in ``conv.state``
cannot explode CloudWatch's metric count (and cost).

A conversation's metrics are one EMF document (one log line, which CloudWatch Logs bills by the
byte): each metric is a directive of that document, under one or more dimension sets, sharing the
top-level values. A dimension has one value per document, so each action after the first (each
has its own ``Action`` value) adds a small document of its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aftercall.models.event import ConversationEndedDetail
from aftercall.observability import metrics

SENTIMENTS = frozenset({"positive", "neutral", "negative", "mixed"})
RESOLUTIONS = frozenset({"resolved", "unresolved", "escalated", "transferred"})
ACTION_METRICS = {"done": "ActionSucceeded", "already_done": "ActionAlreadyDone", "failed": "ActionFailed"}


def _label(value: Any, known: frozenset[str]) -> str:
    if value is None or value == "":
        return "unknown"
    text = str(value).strip().lower()
    return text if text in known else "other"


def resolution_of(state: Mapping[str, Any]) -> str:
    if "resolution" in state:
        return _label(state["resolution"], RESOLUTIONS)
    if isinstance(state.get("resolved"), bool):
        return "resolved" if state["resolved"] else "unresolved"
    return "unknown"


class _Document:
    """One EMF document: directives (a metric under one dimension set) over shared top-level values."""

    def __init__(self) -> None:
        self.service = str(metrics.service or "aftercall")
        self.values: dict[str, Any] = {"service": self.service}
        self.directives: list[dict[str, Any]] = []

    def add(self, name: str, unit: str, value: float, *dimensions: tuple[str, str]) -> None:
        """``name`` once under each of ``dimensions`` (each with ``service``), or under ``service`` alone."""
        for dimension, label in dimensions:
            self.values[dimension] = label
        sets = [[dimension, "service"] for dimension, _ in dimensions] or [["service"]]
        self.values[name] = value
        self.directives.append(
            {"Namespace": metrics.namespace, "Dimensions": sets, "Metrics": [{"Name": name, "Unit": unit}]}
        )

    def emit(self) -> None:
        document = {"_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": self.directives}}
        print(json.dumps({**document, **self.values}, separators=(",", ":")), flush=True)


#: One action's outcome for the metrics: its name, ``done``/``already_done``/``failed``, its seconds.
ActionMetric = tuple[str, str, float]


def record_conversation(detail: ConversationEndedDetail, actions: Iterable[ActionMetric] = ()) -> None:
    """Counts by direction, environment, resolution and sentiment, duration by direction,
    ``ConversationsProcessed``, and one data point per action; all in one line for the first action."""
    document = _Document()
    document.add(
        "Conversations",
        "Count",
        1,
        ("Direction", detail.direction),
        ("Environment", detail.environment),
        ("Resolution", resolution_of(detail.state)),
        ("Sentiment", _label(detail.state.get("sentiment"), SENTIMENTS)),
    )
    document.add("ConversationDuration", "Seconds", detail.duration_seconds, ("Direction", detail.direction))
    document.add("ConversationsProcessed", "Count", 1)
    pending = list(actions)
    if pending:
        _add_action(document, detail.conversation_id, *pending.pop(0))
    document.emit()
    record_actions(detail.conversation_id, pending)


def record_actions(conversation_id: str, outcomes: Iterable[ActionMetric]) -> None:
    """One data point per action: ``ActionSucceeded``, ``ActionAlreadyDone`` or ``ActionFailed`` by action."""
    for outcome in outcomes:
        document = _Document()
        _add_action(document, conversation_id, *outcome)
        document.emit()


def _add_action(document: _Document, conversation_id: str, action: str, status: str, seconds: float) -> None:
    """The action's metric, with the fields the per-action INFO lines used to carry: the EMF line is
    that line now ("action done", the conversation, ``action``, ``seconds``: what ``aftercall inspect``
    and the template's "slowest actions" query read). A failed action has its own ERROR line."""
    document.add(ACTION_METRICS[status], "Count", 1, ("Action", action.split(":", 1)[0]))
    if status != "failed":
        document.values["message"] = "action " + status.replace("_", " ")
        document.values["conversation_id"] = conversation_id
    document.values["action"] = action
    document.values["seconds"] = round(seconds, 3)
