"""Sending a due follow-up (FollowUp function side): SMS through SNS, email through SES, or a
``Callback Requested`` event on the bus — once, guarded by the action ledger, because Scheduler
delivers at least once.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aftercall import aws
from aftercall.crm.base import CrmCall
from aftercall.errors import ConfigurationError, FollowUpPayloadError
from aftercall.follow_ups import FollowUpKind
from aftercall.ledger import ActionLedger
from aftercall.privacy import mask_email, mask_phone

CALLBACK_DETAIL_TYPE = "Callback Requested"
FOLLOW_UP_SOURCE = "aftercall.follow-up"


class FollowUpPayload(BaseModel):
    """What the FollowUp function accepts: exactly what ``schedule.FollowUp.payload`` produces."""

    model_config = ConfigDict(extra="forbid")

    aftercall: Literal["follow-up"]
    version: Literal["1"]
    conversation_id: str = Field(min_length=1, max_length=128)
    environment: str
    key: str = Field(min_length=1, max_length=64)
    kind: FollowUpKind
    to: str = Field(min_length=3, max_length=320)
    message: str = Field(min_length=1, max_length=1600)
    subject: str | None = Field(default=None, max_length=200)
    scheduled_for: str


class FollowUpSender:
    """Sends a due follow-up (FollowUp function side), at most once per (conversation, key)."""

    def __init__(self, ledger: ActionLedger, event_bus: str | None, from_email: str | None) -> None:
        self.ledger = ledger
        self.event_bus = event_bus
        self.from_email = from_email

    def send(self, raw: Any, call: CrmCall) -> dict[str, Any]:
        try:
            payload = FollowUpPayload.model_validate(raw)
        except ValidationError as exc:
            fields = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}"
                for e in exc.errors(include_input=False)
            )
            raise FollowUpPayloadError(f"not an aftercall follow-up payload: {fields}") from None
        action = f"follow_up_sent:{payload.key}"
        claim = self.ledger.claim(payload.conversation_id, action, call.deadline)
        if claim.done:
            return {"status": "already_sent", **(claim.result or {})}
        try:
            result = self._deliver(payload)
        except Exception as exc:
            self.ledger.fail(payload.conversation_id, action, f"{type(exc).__name__}: {exc}")
            raise
        self.ledger.complete(payload.conversation_id, action, result)
        return {"status": "sent", **result}

    def _deliver(self, payload: FollowUpPayload) -> dict[str, Any]:
        if payload.kind == "sms":
            response = aws.client("sns").publish(
                PhoneNumber=payload.to,
                Message=payload.message,
                MessageAttributes={"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}},
            )
            return {"kind": "sms", "to": mask_phone(payload.to), "message_id": response["MessageId"]}
        if payload.kind == "email":
            if not self.from_email:
                raise ConfigurationError("FOLLOW_UP_FROM_EMAIL is not set: no verified sender for email follow-ups")
            response = aws.client("sesv2").send_email(
                FromEmailAddress=self.from_email,
                Destination={"ToAddresses": [payload.to]},
                Content={
                    "Simple": {
                        "Subject": {"Data": payload.subject or "Following up on your call"},
                        "Body": {"Text": {"Data": payload.message}},
                    }
                },
            )
            return {"kind": "email", "to": mask_email(payload.to), "message_id": response["MessageId"]}
        if not self.event_bus:
            raise ConfigurationError("EVENT_BUS_NAME is not set: nowhere to put the callback request")
        response = aws.client("events").put_events(
            Entries=[
                {
                    "EventBusName": self.event_bus,
                    "Source": FOLLOW_UP_SOURCE,
                    "DetailType": CALLBACK_DETAIL_TYPE,
                    "Detail": json.dumps(
                        {
                            "conversation_id": payload.conversation_id,
                            "environment": payload.environment,
                            "phone": payload.to,
                            "reason": payload.message,
                        }
                    ),
                }
            ]
        )
        if response.get("FailedEntryCount"):
            entry = response["Entries"][0]
            raise RuntimeError(f"PutEvents refused the callback request: {entry.get('ErrorCode')}")
        return {"kind": "callback", "event_id": response["Entries"][0]["EventId"]}
