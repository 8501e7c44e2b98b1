"""The ``Conversation Ended`` event contract (schema version 1.0).

Every field is documented in ``docs/event-contract.md``; change both together. The model is
strict on purpose: an event that does not match is refused with an error naming the field,
before any side effect happens.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

SCHEMA_VERSION = "1.0"
DETAIL_TYPE = "Conversation Ended"

#: EventBridge refuses entries over 256 KB; ``state`` gets most of it, the rest is headroom
#: for the envelope and the other fields.
MAX_STATE_BYTES = 200 * 1024
MAX_STATE_DEPTH = 32
MAX_EVENT_BYTES = 256 * 1024

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
#: A number dialled nationally, without country code (read with ``DefaultPhoneRegion`` later).
NATIONAL_NUMBER = re.compile(r"^\d{8,15}$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}\.[^@\s]{2,}$")
#: What an ISO 8601 date-time starts with; pydantic alone would also take a bare number (or a
#: string of digits) as Unix time, which the contract does not allow.
ISO_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
#: Conversation ids end up in DynamoDB keys, schedule names and CRM idempotency keys.
CONVERSATION_ID = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$"

# Characters removed from every string in ``state``: C0/C1 controls except tab and newline.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

EndedReason = Literal[
    "completed",
    "customer_hangup",
    "agent_hangup",
    "transferred",
    "voicemail",
    "no_answer",
    "busy",
    "failed",
    "timeout",
    "other",
]
Channel = Literal["voice", "chat", "sms", "email"]
Direction = Literal["inbound", "outbound"]
Environment = Literal["sandbox", "live"]


def _sanitise(value: Any, depth: int = 0) -> Any:
    """Return ``value`` as plain JSON data with clean strings, or raise ValueError saying why."""
    if depth > MAX_STATE_DEPTH:
        raise ValueError(f"state is nested deeper than {MAX_STATE_DEPTH} levels")
    if isinstance(value, str):
        return unicodedata.normalize("NFC", _CONTROL.sub("", value))  # strip, then compose
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("state holds NaN or infinity, which JSON cannot carry")
        return value
    if isinstance(value, list | tuple):
        return [_sanitise(item, depth + 1) for item in value]
    if isinstance(value, dict):
        clean: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"state keys must be strings, got {type(key).__name__}")
            clean[_sanitise(key, depth + 1)] = _sanitise(item, depth + 1)
        return clean
    raise ValueError(f"state holds a {type(value).__name__}, which is not JSON data")


def _valid_state(value: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = _sanitise(value)
    size = len(json.dumps(clean, ensure_ascii=False).encode())
    if size > MAX_STATE_BYTES:
        raise ValueError(f"state is {size} bytes; the limit is {MAX_STATE_BYTES} bytes")
    return clean


def _phone(value: str | None) -> str | None:
    if value is None:
        return None
    compact = re.sub(r"[\s().\-]", "", value)
    if not E164.match(compact) and not NATIONAL_NUMBER.match(compact):
        raise ValueError(
            "must be an E.164 phone number such as +14155550100 "
            "(or a national number of 8 to 15 digits, read with DefaultPhoneRegion)"
        )
    return compact


def _email(value: str | None) -> str | None:
    if value is None:
        return None
    if not EMAIL.match(value.strip()):
        raise ValueError("must be an email address such as name@example.com")
    return value.strip().lower()


def _iso_date_time(value: Any) -> Any:
    """Let only ISO 8601 text (or a datetime, from Python callers) through to the datetime parser."""
    if isinstance(value, datetime) or (isinstance(value, str) and ISO_DATE_TIME.match(value)):
        return value
    raise ValueError("must be an ISO 8601 date-time with a time zone, such as 2026-11-25T10:00:00Z")


PhoneNumber = Annotated[str | None, AfterValidator(_phone)]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_iso_date_time)]
EmailAddress = Annotated[str | None, AfterValidator(_email)]


class ConversationEndedDetail(BaseModel):
    """The ``detail`` of a ``Conversation Ended`` event (schema 1.0)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=2048)

    schema_version: Literal["1.0"] = Field(description="Contract version; bumped on breaking changes.")
    conversation_id: str = Field(pattern=CONVERSATION_ID, description="The platform's id for the call/chat.")
    environment: Environment = Field(description="Which stage the conversation ran in.")
    channel: Channel
    direction: Direction
    started_at: Timestamp
    ended_at: Timestamp
    # strict: a number, not a numeric string or a boolean (pydantic would coerce both)
    duration_seconds: float = Field(ge=0, le=7 * 24 * 3600, strict=True)
    caller: PhoneNumber = Field(default=None, description="E.164 number of the calling party.")
    callee: PhoneNumber = Field(default=None, description="E.164 number of the called party.")
    customer_email: EmailAddress = Field(default=None, description="The customer's email, for chat.")
    agent_id: str = Field(min_length=1, max_length=128)
    ended_reason: EndedReason
    ended_reason_raw: str | None = Field(default=None, max_length=256)
    state: Annotated[dict[str, Any], AfterValidator(_valid_state)] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _times_in_order(self) -> ConversationEndedDetail:
        if self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        return self

    @property
    def customer_phone(self) -> str | None:
        """The customer's number: the caller on inbound calls, the callee on outbound ones."""
        return self.caller if self.direction == "inbound" else self.callee


class ConversationEndedEvent(EventBridgeModel):
    """The EventBridge envelope around :class:`ConversationEndedDetail`."""

    detail_type: Literal["Conversation Ended"] = Field(alias="detail-type")
    detail: ConversationEndedDetail


#: Every name the contract defines (fields and aliases of the envelope and the detail): the only
#: names an error message may quote. Any other name came from the sender and may be personal data.
CONTRACT_NAMES: frozenset[str] = frozenset(
    name
    for model in (ConversationEndedEvent, ConversationEndedDetail)
    for field_name, info in model.model_fields.items()
    for name in (field_name, info.alias)
    if name
)
