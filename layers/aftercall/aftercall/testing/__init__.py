"""Run an End function with no AWS, no stack and no CRM: for your own pytest and ``aftercall try``.

    from aftercall.testing import run_end_function
    from end_function import end_function

    def test_a_support_call_opens_a_high_priority_ticket():
        plan = run_end_function(event, end_function)        # an event envelope or just its detail
        assert plan.names == ("crm_summary", "support_ticket")
        assert plan["support_ticket"].arguments.priority == "HIGH"
        assert plan["support_ticket"].requests[-1].path == "/crm/v3/objects/tickets"

The event is validated exactly as the EndHandler validates it (an invalid one raises
:class:`~aftercall.errors.InvalidEventError` with the handler's reason), ``end_function`` runs on
the same ``conv``, and each planned action is then performed by the real code: the real CRM
adapter sends its real requests, but through a recording transport that answers like the CRM
would (:class:`RecordingCrm`); follow-ups and notifications go to boto3 clients that record each
call and answer without the network (:class:`RecordingAws`). Nothing leaves the process.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aftercall.actions import ActionPlan
from aftercall.conversation import Conversation
from aftercall.crm.base import CrmCall
from aftercall.deadline import Deadline
from aftercall.follow_ups.schedule import FollowUp
from aftercall.handler import parse_event
from aftercall.models.event import DETAIL_TYPE, ConversationEndedDetail
from aftercall.notifications import Notification
from aftercall.testing.masking import mask, plain
from aftercall.testing.recording_aws import ACCOUNT, REGION, AwsCall, RecordingAws
from aftercall.testing.recording_crm import RecordedRequest, RecordingCrm

__all__ = ["AwsCall", "Plan", "PlannedAction", "RecordedRequest", "RecordingAws", "RecordingCrm", "run_end_function"]

EndFunction = Callable[[Conversation], object]
#: Per-action budget, as a Lambda invocation would give (the recording answers at once anyway).
_ACTION_SECONDS = 60.0


@dataclass(frozen=True)
class PlannedAction:
    """One action the End function planned, and what performing it did against the recordings."""

    name: str
    arguments: object
    requests: tuple[RecordedRequest, ...] = ()
    aws_calls: tuple[AwsCall, ...] = ()
    result: dict[str, Any] | None = None
    error: BaseException | None = None

    def to_json(self, masked: bool = True) -> dict[str, Any]:
        arguments = plain(self.arguments)
        data: dict[str, Any] = {
            "name": self.name,
            "arguments": mask(arguments) if masked else arguments,
            "requests": [r.to_json(masked) for r in self.requests],
            "aws_calls": [c.to_json(masked) for c in self.aws_calls],
            "result": self.result,  # object ids and names: nothing personal
        }
        if self.error is not None:
            data["error"] = f"{type(self.error).__name__}: {self.error}"
        return data


@dataclass(frozen=True)
class Plan:
    """What ``end_function`` planned for one conversation, in the order it planned it."""

    detail: ConversationEndedDetail
    actions: tuple[PlannedAction, ...]
    performed: bool = True
    _by_name: dict[str, PlannedAction] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update({action.name: action for action in self.actions})

    @property
    def conversation_id(self) -> str:
        return self.detail.conversation_id

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(action.name for action in self.actions)

    def __getitem__(self, name: str) -> PlannedAction:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no action {name!r} was planned; planned: {', '.join(self.names) or 'none'}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[PlannedAction]:
        return iter(self.actions)

    @property
    def requests(self) -> tuple[RecordedRequest, ...]:
        """Every CRM request, in order."""
        return tuple(request for action in self.actions for request in action.requests)

    @property
    def follow_ups(self) -> tuple[FollowUp, ...]:
        return tuple(a.arguments for a in self.actions if isinstance(a.arguments, FollowUp))

    @property
    def notifications(self) -> tuple[Notification, ...]:
        return tuple(a.arguments for a in self.actions if isinstance(a.arguments, Notification))

    @property
    def ok(self) -> bool:
        """True when every action was performed without error."""
        return all(action.error is None for action in self.actions)

    def to_json(self, masked: bool = True) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "performed": self.performed,
            "ok": self.ok,
            "actions": [action.to_json(masked) for action in self.actions],
        }


def as_event(event_or_detail: Any) -> Any:
    """An EventBridge envelope: a detail (dict or model) is wrapped the way ``aftercall emit`` sends it."""
    if isinstance(event_or_detail, ConversationEndedDetail):
        event_or_detail = event_or_detail.model_dump(mode="json")
    if isinstance(event_or_detail, Mapping) and ("detail" in event_or_detail or "detail-type" in event_or_detail):
        return event_or_detail
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": DETAIL_TYPE,
        "source": "aftercall.platform",
        "account": ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [],
        "detail": event_or_detail,
    }


def _environment(event: Any) -> str:
    """The stage to validate against: the event's own environment (a stage mismatch is not the test's point)."""
    detail = event.get("detail") if isinstance(event, Mapping) else None
    environment = detail.get("environment") if isinstance(detail, Mapping) else None
    return environment if environment in ("sandbox", "live") else "sandbox"


def run_end_function(
    event_or_detail: Any,
    end_function: EndFunction,
    *,
    crm: RecordingCrm | str = "hubspot",
    aws: RecordingAws | None = None,
    stage: str | None = None,
    perform: bool = True,
) -> Plan:
    """Validate the event as the handler does, run ``end_function`` on it, and perform its plan against recordings.

    Raises :class:`~aftercall.errors.InvalidEventError` (the handler's reason) for an event that
    breaks the contract, and whatever ``end_function`` raises, unchanged. An action that fails
    (a follow-up due long ago, a customer the CRM does not know) does not raise: its
    ``PlannedAction.error`` says why, as the handler's log would. ``crm``: a provider name or a
    :class:`RecordingCrm` of your own; ``perform=False`` only plans.
    """
    event = as_event(event_or_detail)
    detail = parse_event(event, stage or _environment(event))
    recording_crm = RecordingCrm(crm) if isinstance(crm, str) else crm
    recording_aws = aws or RecordingAws()
    plan = ActionPlan(detail, lambda: recording_crm.crm, recording_aws.follow_ups, recording_aws.notifier)
    end_function(Conversation(detail, plan))
    if not perform:
        return Plan(detail, tuple(PlannedAction(a.name, a.arguments) for a in plan.planned), performed=False)
    actions = []
    for action in plan.planned:  # one after another, so each request is attributed to its action
        crm_before, aws_before = len(recording_crm.requests), len(recording_aws.calls)
        result: dict[str, Any] | None = None
        error: BaseException | None = None
        try:
            result = action.perform(CrmCall(Deadline.after(_ACTION_SECONDS)))
        except Exception as exc:  # noqa: BLE001 - kept as this action's outcome, as the handler does
            error = exc
        actions.append(
            PlannedAction(
                action.name,
                action.arguments,
                tuple(recording_crm.requests[crm_before:]),
                tuple(recording_aws.calls[aws_before:]),
                result,
                error,
            )
        )
    return Plan(detail, tuple(actions))
