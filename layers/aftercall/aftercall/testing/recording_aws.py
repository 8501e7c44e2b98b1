"""The AWS side of the kit: Scheduler and SNS clients that record each call and answer in-process."""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse, HTTPHeaders

from aftercall.follow_ups.schedule import FollowUpScheduler
from aftercall.notifications import Notifier
from aftercall.testing.masking import mask

#: What the recorded stack is called in ARNs and names (nothing with these names exists).
REGION = "us-east-1"
ACCOUNT = "000000000000"
_SCHEDULE_GROUP = "aftercall-testing-follow-ups"
_TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:aftercall-testing-notifications"


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
        "ScheduleArn": f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/{p.get('GroupName')}/{p.get('Name')}"
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
                    region_name=REGION,
                )
                made = session.client(service, endpoint_url=f"https://{service}.{REGION}.amazonaws.com")  # type: ignore[call-overload]
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
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:aftercall-testing-follow-up",
            f"arn:aws:iam::{ACCOUNT}:role/aftercall-testing-scheduler",
            None,
            client=self.client("scheduler"),
        )

    def notifier(self) -> Notifier:
        return Notifier(_TOPIC_ARN, client=self.client("sns"))
