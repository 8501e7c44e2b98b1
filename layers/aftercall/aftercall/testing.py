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

import copy
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
import requests
from botocore.awsrequest import AWSResponse, HTTPHeaders
from requests.adapters import BaseAdapter

from aftercall.actions import ActionPlan
from aftercall.conversation import Conversation
from aftercall.credentials import SecretCredentials
from aftercall.crm.base import Crm, CrmCall
from aftercall.deadline import Deadline
from aftercall.follow_ups.schedule import FollowUp, FollowUpScheduler
from aftercall.handler import parse_event
from aftercall.models.event import DETAIL_TYPE, ConversationEndedDetail
from aftercall.notifications import Notification, Notifier
from aftercall.privacy import redact
from aftercall.settings import CRM_PROVIDERS

__all__ = ["AwsCall", "Plan", "PlannedAction", "RecordedRequest", "RecordingAws", "RecordingCrm", "run_end_function"]

EndFunction = Callable[[Conversation], object]
#: What the recorded stack is called in ARNs and names (nothing with these names exists).
_REGION = "us-east-1"
_ACCOUNT = "000000000000"
_SCHEDULE_GROUP = "aftercall-testing-follow-ups"
_TOPIC_ARN = f"arn:aws:sns:{_REGION}:{_ACCOUNT}:aftercall-testing-notifications"
#: Secret-looking keys whose values never appear in what is shown.
_SECRET_KEYS = frozenset({"client_secret", "access_token", "api_token", "signing_secret", "password"})
_HIDDEN_HEADERS = frozenset({"authorization", "x-aftercall-signature", "x-aftercall-timestamp"})
#: Per-action budget, as a Lambda invocation would give (the recording answers at once anyway).
_ACTION_SECONDS = 60.0


def mask(value: Any) -> Any:
    """``value`` with phone numbers, emails and secrets masked in every string (for showing it)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: "***" if str(k).lower() in _SECRET_KEYS else mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(item) for item in value]
    return value


def _plain(value: Any) -> Any:
    """Dataclasses, datetimes and tuples as JSON data."""
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


# --------------------------------------------------------------------------------------------- the CRM


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request an adapter sent: ``path`` without the host, ``body`` decoded (JSON or form)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    status: int

    def to_json(self, masked: bool = True) -> dict[str, Any]:
        data = {"method": self.method, "path": self.path, "query": self.query, "body": self.body}
        if masked:  # headers carry no personal data (credentials and signatures are never recorded)
            data = mask(data)
        return {**data, "headers": self.headers, "status": self.status}


Responder = Callable[[str, str, dict[str, str], Any], tuple[int, Any]]


class _RecordingTransport(BaseAdapter):
    """A requests transport that records each request and answers it through ``responder``."""

    def __init__(self, responder: Responder, record: Callable[[RecordedRequest], None]) -> None:
        super().__init__()
        self._responder = responder
        self._record = record

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        parts = urlsplit(request.url or "")
        query = dict(parse_qsl(parts.query))
        raw = request.body.encode() if isinstance(request.body, str) else (request.body or b"")
        content_type = request.headers.get("Content-Type", "")
        body: Any
        if not raw:
            body = None
        elif "x-www-form-urlencoded" in content_type:
            body = dict(parse_qsl(raw.decode()))
        else:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        method = (request.method or "GET").upper()
        status, answer = self._responder(method, parts.path, query, body)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HIDDEN_HEADERS}
        for drop in ("User-Agent", "Accept-Encoding", "Connection", "Content-Length", "Accept"):
            headers.pop(drop, None)
        self._record(RecordedRequest(method, parts.path, query, body, headers, status))
        response = requests.Response()
        response.status_code = status
        response.url = request.url or ""
        response.request = request
        response._content = b"" if answer is None else json.dumps(answer).encode()
        response.headers["Content-Type"] = "application/json"
        return response

    def close(self) -> None:
        """Nothing to release: no connection was opened."""


class _StaticCredentials(SecretCredentials):
    """Credentials that never touch Secrets Manager."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__("aftercall.testing", tuple(values))
        self._values = dict(values)

    def get(self, force: bool = False) -> dict[str, str]:
        return dict(self._values)


class RecordingCrm:
    """A real CRM adapter whose requests are recorded and answered like the CRM would answer them.

    ``known_customer=False`` makes every customer lookup come back empty, so the adapter raises
    what it raises for a caller the CRM does not know (``UnknownContactError``).
    """

    def __init__(self, provider: str = "hubspot", *, known_customer: bool = True) -> None:
        if provider not in CRM_PROVIDERS:
            raise ValueError(f"crm must be one of {', '.join(CRM_PROVIDERS)}, not {provider!r}")
        self.provider = provider
        self.known_customer = known_customer
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._ids = iter(range(1001, 1_000_000))
        transport = _RecordingTransport(getattr(self, f"_{provider}"), self._append)
        self.crm: Crm = _adapter(provider, transport)

    def _append(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def _hubspot(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if method == "POST" and path == "/crm/v3/objects/contacts/search":
            results = [{"id": "501", "properties": {}}] if self.known_customer else []
            return 200, {"total": len(results), "results": results}
        if method == "POST" and path.endswith("/search"):
            return 200, {"total": 0, "results": []}
        if method == "POST" and path.startswith("/crm/v3/objects/"):
            return 201, {"id": str(self._next_id()), "properties": (body or {}).get("properties", {})}
        if method == "PATCH" and path.startswith("/crm/v3/objects/contacts/"):
            return 200, {"id": path.rsplit("/", 1)[1], "properties": (body or {}).get("properties", {})}
        return _no_answer(method, path)

    def _salesforce(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if method == "POST" and path == "/services/oauth2/token":
            return 200, {"access_token": "recorded-token", "instance_url": "https://example.my.salesforce.com"}
        if method == "GET" and path.endswith("/query"):
            sobject = "Lead" if " FROM Lead " in f" {query.get('q', '')} " else "Contact"
            records = [{"Id": ("00Q" if sobject == "Lead" else "003") + "000000000501"}] if self.known_customer else []
            return 200, {"totalSize": len(records), "done": True, "records": records}
        below = path.partition("/sobjects/")[2].split("/")
        if method == "PATCH" and len(below) == 2:  # a field update on one record: 204, no body
            return 204, None
        if method == "PATCH" and len(below) == 3:  # an upsert on the external id: created
            prefix = "500" if below[0] == "Case" else "00T"
            return 201, {"id": f"{prefix}{self._next_id():012d}", "success": True, "created": True, "errors": []}
        return _no_answer(method, path)

    def _zendesk(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/api/v2/users/search":
            value = query.get("query", "")
            user = {"id": 9001, "phone": value, "email": None} if "@" not in value else {"id": 9001, "email": value}
            return 200, {"users": [user] if self.known_customer else [], "count": int(self.known_customer)}
        if method == "GET" and path == "/api/v2/tickets":
            return 200, {"tickets": [], "count": 0}
        if method == "POST" and path == "/api/v2/tickets":
            return 201, {"ticket": {"id": self._next_id(), **((body or {}).get("ticket") or {})}}
        if method == "PUT" and path.startswith("/api/v2/users/"):
            fields = ((body or {}).get("user") or {}).get("user_fields") or {}
            return 200, {"user": {"id": int(path.rsplit("/", 1)[1]), "user_fields": fields}}
        return _no_answer(method, path)

    def _webhook(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if method == "POST":
            if not self.known_customer:
                return 404, {"error": "unknown_contact"}
            return 200, {"id": f"received-{self._next_id()}"}
        return _no_answer(method, path)


def _no_answer(method: str, path: str) -> tuple[int, Any]:
    return 404, {"message": f"aftercall.testing has no recorded answer for {method} {path}"}


def _adapter(provider: str, transport: BaseAdapter) -> Crm:
    """The real adapter for ``provider``, sending through ``transport``."""
    if provider == "hubspot":
        from aftercall.crm.hubspot import DEFAULT_BASE_URL, HubSpotCrm

        return HubSpotCrm(_StaticCredentials({"access_token": "recorded"}), DEFAULT_BASE_URL, transport=transport)
    if provider == "salesforce":
        from aftercall.crm.salesforce import SalesforceCrm

        secret = {
            "client_id": "recorded",
            "client_secret": "recorded",
            "instance_url": "https://example.my.salesforce.com",
        }
        return SalesforceCrm(_StaticCredentials(secret), transport=transport)
    if provider == "zendesk":
        from aftercall.crm.zendesk import ZendeskCrm

        secret = {"subdomain": "example", "email": "agent@example.com", "api_token": "recorded"}
        return ZendeskCrm(_StaticCredentials(secret), transport=transport)
    from aftercall.crm.webhook import WebhookCrm

    secret = {"url": "https://hooks.example.com/aftercall", "signing_secret": "recorded"}
    return WebhookCrm(_StaticCredentials(secret), transport=transport)


# --------------------------------------------------------------------------------------------- AWS


@dataclass(frozen=True)
class AwsCall:
    """One AWS API call (as boto3 parameters) a follow-up or notification made."""

    service: str
    operation: str
    params: dict[str, Any]

    def to_json(self, masked: bool = True) -> dict[str, Any]:
        data = {"service": self.service, "operation": self.operation, "params": _decoded(self.params)}
        return mask(data) if masked else data


def _decoded(params: dict[str, Any]) -> dict[str, Any]:
    """A schedule's ``Target.Input`` is JSON text: shown as the payload it is."""
    target = params.get("Target")
    if isinstance(target, dict) and isinstance(target.get("Input"), str):
        try:
            return {**params, "Target": {**target, "Input": json.loads(target["Input"])}}
        except ValueError:
            pass
    return params


_ANSWERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "CreateSchedule": lambda p: {
        "ScheduleArn": f"arn:aws:scheduler:{_REGION}:{_ACCOUNT}:schedule/{p.get('GroupName')}/{p.get('Name')}"
    },
    "Publish": lambda p: {"MessageId": str(uuid.uuid4())},
}


class RecordingAws:
    """Scheduler and SNS clients that validate and record each call, then answer without the network.

    They are real boto3 clients (so a parameter the API would refuse fails here too); a handler
    on botocore's ``before-call`` event answers instead of sending.
    """

    def __init__(self) -> None:
        self.calls: list[AwsCall] = []
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                session = boto3.session.Session(
                    aws_access_key_id="recorded",
                    aws_secret_access_key="recorded",  # noqa: S106 - never sent: nothing leaves the process
                    region_name=_REGION,
                )
                made = session.client(service, endpoint_url=f"https://{service}.{_REGION}.amazonaws.com")  # type: ignore[call-overload]
                made.meta.events.register(f"before-parameter-build.{service}", self._record)
                made.meta.events.register(f"before-call.{service}", self._answer)
                self._clients[service] = made
            return self._clients[service]

    def _record(self, params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        with self._lock:
            self.calls.append(AwsCall(model.service_model.service_name, model.name, copy.deepcopy(params)))

    def _answer(self, model: Any, params: Any, **kwargs: Any) -> tuple[AWSResponse, dict[str, Any]]:
        with self._lock:
            last = self.calls[-1].params if self.calls else {}
        answer = _ANSWERS[model.name](last) if model.name in _ANSWERS else {}
        headers = HTTPHeaders()
        return AWSResponse(f"https://recorded/{model.name}", 200, headers, None), answer

    def follow_ups(self) -> FollowUpScheduler:
        return FollowUpScheduler(
            _SCHEDULE_GROUP,
            f"arn:aws:lambda:{_REGION}:{_ACCOUNT}:function:aftercall-testing-follow-up",
            f"arn:aws:iam::{_ACCOUNT}:role/aftercall-testing-scheduler",
            None,
            client=self.client("scheduler"),
        )

    def notifier(self) -> Notifier:
        return Notifier(_TOPIC_ARN, client=self.client("sns"))


# --------------------------------------------------------------------------------------------- the plan


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
        arguments = _plain(self.arguments)
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
        "account": _ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": _REGION,
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
