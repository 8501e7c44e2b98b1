"""Recognise what lies in the failed-events queue: three message shapes, or "unrecognised".

One queue receives failures from three writers, each in its own shape (docs/operations.md):

* ``eventbridge-dlq`` — the rule target's dead-letter queue (delivery failed: permissions,
  throttling). Body = the original event; message attributes ``RULE_ARN``, ``TARGET_ARN``,
  ``ERROR_CODE``, ``ERROR_MESSAGE``, ``EXHAUSTED_RETRY_CONDITION``, ``RETRY_ATTEMPTS``.
* ``lambda-on-failure`` — Lambda's ``OnFailure`` destination after the async retries, and the
  handler's own parking of permanently bad events (condition ``RejectedByFunction``). Body =
  ``{version, timestamp, requestContext, requestPayload, responseContext, responsePayload}``;
  the event is ``requestPayload``.
* ``lambda-dlq`` — the legacy function dead-letter queue. Body = the raw event; attributes
  ``RequestID``, ``ErrorCode``, ``ErrorMessage``.

Anything else is ``unrecognised``: reported, never deleted, never replayed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aftercall.privacy import redact

Shape = Literal["eventbridge-dlq", "lambda-on-failure", "lambda-dlq", "unrecognised"]
SHAPES: tuple[Shape, ...] = ("eventbridge-dlq", "lambda-on-failure", "lambda-dlq", "unrecognised")

EVENTBRIDGE_ATTRIBUTES = (
    "RULE_ARN",
    "TARGET_ARN",
    "ERROR_CODE",
    "ERROR_MESSAGE",
    "EXHAUSTED_RETRY_CONDITION",
    "RETRY_ATTEMPTS",
)
LEGACY_ATTRIBUTES = ("RequestID", "ErrorCode", "ErrorMessage")
ON_FAILURE_KEYS = ("requestContext", "requestPayload")

#: What to ask ReceiveMessage for, so every shape can be recognised and aged.
RECEIVE_ARGS: dict[str, Any] = {"MessageAttributeNames": ["All"], "MessageSystemAttributeNames": ["All"]}

_PREVIEW_CHARS = 160
#: SQS's largest message body (1 MiB); anything longer did not come from SQS and is not read.
MAX_BODY_CHARS = 1_048_576
#: A JSON escape of a UTF-16 surrogate: the only way JSON text can hold a string UTF-8 cannot encode.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class FailedEvent:
    """One message of the failed-events queue, understood.

    ``event`` is the EventBridge event to hand back (None when unrecognised); ``error`` is one
    line an operator can filter on; ``age_seconds`` is the time since the message entered the
    queue (SQS ``SentTimestamp``).
    """

    shape: Shape
    message_id: str
    receipt_handle: str
    event: dict[str, Any] | None
    conversation_id: str | None
    error: str
    error_type: str | None
    condition: str | None
    attempts: int | None
    sent_at: datetime | None
    age_seconds: float | None
    receive_count: int | None
    problem: str | None = None
    preview: str | None = None
    #: What ``event`` is: a Conversation Ended ``event``, or a ``follow-up`` payload (invoke mode only).
    payload_kind: Literal["event", "follow-up"] = "event"

    @property
    def recognised(self) -> bool:
        return self.shape != "unrecognised"

    @property
    def source(self) -> str | None:
        """The event's ``source`` (None for a follow-up payload or an unrecognised message)."""
        return _text_field(self.event, "source") if self.payload_kind == "event" else None

    @property
    def detail_type(self) -> str | None:
        """The event's ``detail-type`` (None for a follow-up payload or an unrecognised message)."""
        return _text_field(self.event, "detail-type") if self.payload_kind == "event" else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (without the event itself, which may hold personal data)."""
        return {
            "message_id": self.message_id,
            "shape": self.shape,
            "conversation_id": self.conversation_id,
            "error": self.error,
            "error_type": self.error_type,
            "condition": self.condition,
            "attempts": self.attempts,
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "age_seconds": round(self.age_seconds, 1) if self.age_seconds is not None else None,
            "receive_count": self.receive_count,
            "problem": self.problem,
            "payload_kind": self.payload_kind,
        }


def classify(message: Mapping[str, Any], now: datetime | None = None) -> FailedEvent:
    """Recognise one SQS message (as returned by ReceiveMessage with all attributes)."""
    now = now or datetime.now(UTC)
    attributes = _message_attributes(message)
    system = message.get("Attributes", {}) or {}
    sent_at = _from_millis(system.get("SentTimestamp"))
    common: dict[str, Any] = {
        "message_id": str(message.get("MessageId", "")),
        "receipt_handle": str(message.get("ReceiptHandle", "")),
        "sent_at": sent_at,
        "age_seconds": (now - sent_at).total_seconds() if sent_at else None,
        "receive_count": _int(system.get("ApproximateReceiveCount")),
    }
    raw_body = message.get("Body", "")
    body_text = raw_body if isinstance(raw_body, str) else str(raw_body)
    body, problem = _parse(body_text)
    if problem is not None:
        return _unrecognised(common, problem, body_text)

    if any(name in attributes for name in EVENTBRIDGE_ATTRIBUTES):
        return _with_event(
            common,
            "eventbridge-dlq",
            body,
            body_text,
            error_type=attributes.get("ERROR_CODE"),
            error_message=attributes.get("ERROR_MESSAGE"),
            condition=attributes.get("EXHAUSTED_RETRY_CONDITION"),
            attempts=_int(attributes.get("RETRY_ATTEMPTS")),
        )
    if isinstance(body, dict) and all(key in body for key in ON_FAILURE_KEYS):
        return _on_failure(common, body, body_text)
    if any(name in attributes for name in LEGACY_ATTRIBUTES) or _looks_like_event(body):
        return _with_event(
            common,
            "lambda-dlq",
            body,
            body_text,
            error_type=attributes.get("ErrorCode"),
            error_message=attributes.get("ErrorMessage"),
            condition=None,
            attempts=None,
        )
    return _unrecognised(common, "neither an EventBridge event nor a Lambda OnFailure record", body_text)


def _parse(body_text: str) -> tuple[Any, str | None]:
    """The body as JSON, or why it cannot be read: a poison message must never stop a tool."""
    if len(body_text) > MAX_BODY_CHARS:
        return None, f"body is {len(body_text):,} characters, over SQS's {MAX_BODY_CHARS:,}"
    try:
        body = json.loads(body_text)
    except json.JSONDecodeError as exc:
        return None, f"body is not JSON ({exc.msg} at char {exc.pos})"
    except RecursionError:
        return None, "body nests too deep to read"
    except ValueError as exc:  # e.g. an integer over Python's 4,300-digit conversion limit
        return None, f"body is not JSON this tool can read ({str(exc)[:80]})"
    if _SURROGATE_ESCAPE.search(body_text):
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return None, "body holds text that is not valid Unicode (a lone surrogate escape)"
    return body, None


def _on_failure(common: dict[str, Any], body: dict[str, Any], body_text: str) -> FailedEvent:
    context = body.get("requestContext") or {}
    response = body.get("responsePayload")
    error_type: str | None = None
    error_message: str | None = None
    if isinstance(response, dict):
        error_type = _str(response.get("errorType"))
        error_message = _str(response.get("errorMessage"))
    elif response is not None:
        error_message = _str(response)
    condition = _str(context.get("condition")) if isinstance(context, dict) else None
    attempts = _int(context.get("approximateInvokeCount")) if isinstance(context, dict) else None
    return _with_event(
        common,
        "lambda-on-failure",
        body.get("requestPayload"),
        body_text,
        error_type=error_type,
        error_message=error_message,
        condition=condition,
        attempts=attempts,
    )


def _with_event(
    common: dict[str, Any],
    shape: Shape,
    event: Any,
    body_text: str,
    *,
    error_type: str | None,
    error_message: str | None,
    condition: str | None,
    attempts: int | None,
) -> FailedEvent:
    if shape == "lambda-on-failure" and _looks_like_follow_up(event):
        # The FollowUp function's failures (FailedFollowUpsQueue): replayed with --mode invoke
        # --function <FollowUpFunctionName>, which hands the payload back to that function.
        conversation_id = event.get("conversation_id")
        return FailedEvent(
            shape=shape,
            event=event,
            conversation_id=conversation_id if isinstance(conversation_id, str) else None,
            error=_error_line(error_type, error_message, condition),
            error_type=error_type,
            condition=condition,
            attempts=attempts,
            payload_kind="follow-up",
            **common,
        )
    if not _looks_like_event(event):
        what = "requestPayload" if shape == "lambda-on-failure" else "body"
        return _unrecognised(
            common, f"{shape} message whose {what} is not an EventBridge event (no detail-type/detail)", body_text
        )
    detail = event.get("detail")
    conversation_id = detail.get("conversation_id") if isinstance(detail, dict) else None
    return FailedEvent(
        shape=shape,
        event=event,
        conversation_id=conversation_id if isinstance(conversation_id, str) else None,
        error=_error_line(error_type, error_message, condition),
        error_type=error_type,
        condition=condition,
        attempts=attempts,
        **common,
    )


def _unrecognised(common: dict[str, Any], problem: str, body_text: str) -> FailedEvent:
    head = body_text[:_PREVIEW_CHARS].encode("utf-8", "replace").decode("utf-8")
    preview = redact(head) + ("…" if len(body_text) > _PREVIEW_CHARS else "")
    return FailedEvent(
        shape="unrecognised",
        event=None,
        conversation_id=None,
        error=f"unrecognised message: {problem}",
        error_type=None,
        condition=None,
        attempts=None,
        problem=problem,
        preview=preview,
        **common,
    )


def _text_field(event: dict[str, Any] | None, name: str) -> str | None:
    value = event.get(name) if event else None
    return value if isinstance(value, str) else None


def _looks_like_follow_up(value: Any) -> bool:
    """A payload EventBridge Scheduler carried to the FollowUp function (aftercall.follow_ups.send)."""
    return isinstance(value, dict) and value.get("aftercall") == "follow-up" and "conversation_id" in value


def _looks_like_event(value: Any) -> bool:
    return isinstance(value, dict) and "detail-type" in value and isinstance(value.get("detail"), dict)


def _error_line(error_type: str | None, message: str | None, condition: str | None) -> str:
    head = ": ".join(part for part in (error_type, message) if part)
    if condition and head:
        return f"{head} [{condition}]"
    return head or condition or "no error recorded"


def _message_attributes(message: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        if isinstance(value, dict):
            text = value.get("StringValue")
            if text is None and value.get("BinaryValue") is not None:
                text = "<binary>"
            if text is not None:
                found[str(name)] = str(text)
    return found


def _from_millis(value: Any) -> datetime | None:
    millis = _int(value)
    return datetime.fromtimestamp(millis / 1000, UTC) if millis is not None else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _str(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return redact(text[:500]).encode("utf-8", "replace").decode("utf-8")
