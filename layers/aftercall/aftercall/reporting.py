"""Metrics for reporting (EMF through Powertools): what happened to each conversation and action.

Dimension values come from small fixed vocabularies, so a free-text ``sentiment`` in ``conv.state``
cannot explode CloudWatch's metric count (and cost).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from aftercall.models.event import ConversationEndedDetail
from aftercall.observability import metrics

SENTIMENTS = frozenset({"positive", "neutral", "negative", "mixed"})
RESOLUTIONS = frozenset({"resolved", "unresolved", "escalated", "transferred"})


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


def _count(name: str, dimension: str, value: str, amount: float = 1, unit: MetricUnit = MetricUnit.Count) -> None:
    with single_metric(
        name=name, unit=unit, value=amount, namespace=metrics.namespace, default_dimensions=metrics.default_dimensions
    ) as metric:
        metric.add_dimension(name=dimension, value=value)


def record_conversation(detail: ConversationEndedDetail) -> None:
    """Counts by direction, environment, resolution and sentiment; duration by direction."""
    _count("Conversations", "Direction", detail.direction)
    _count("Conversations", "Environment", detail.environment)
    _count("Conversations", "Resolution", resolution_of(detail.state))
    _count("Conversations", "Sentiment", _label(detail.state.get("sentiment"), SENTIMENTS))
    _count("ConversationDuration", "Direction", detail.direction, detail.duration_seconds, MetricUnit.Seconds)


def record_actions(outcomes: Iterable[tuple[str, str]]) -> None:
    """One data point per action: ``ActionSucceeded``, ``ActionAlreadyDone`` or ``ActionFailed`` by action."""
    names = {"done": "ActionSucceeded", "already_done": "ActionAlreadyDone", "failed": "ActionFailed"}
    for action, status in outcomes:
        _count(names[status], "Action", action.split(":", 1)[0])
