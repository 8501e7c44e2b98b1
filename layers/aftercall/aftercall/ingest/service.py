"""Ingest: verify → normalise → PutEvents, for signed webhooks and for Amazon Connect contact events.

``functions/ingest/app.py`` wires Powertools around :meth:`IngestService.handle_function_url`
(the function URL) and :meth:`IngestService.handle_connect` (the EventBridge rule on the default
bus); everything here is plain Python that tests drive against the local stack.

The answers, and why:

* ``200 accepted`` only after PutEvents returned an event id for the entry: a vendor that got a
  2xx may forget the call, so the event must already be on the bus.
* ``200 ignored`` for genuine payloads that are not call ends (Vapi status updates, Retell
  ``call_started`` …): answering 4xx would make some vendors disable the webhook.
* ``4xx`` with a reason code for anything unverifiable or unparseable; nothing goes on the bus.
* ``503`` when the secret cannot be read or the bus refused the event, so the vendor retries.
  A refused event that was verified and mapped is also written to the failed-events queue (as an
  ``OnFailure``-shaped record), because some vendors never retry: ``aftercall replay`` brings it
  back, and the handler's idempotency absorbs the copy if the vendor's retry got through too.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import botocore.exceptions
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from aftercall import aws, observability
from aftercall.credentials import SecretCredentials
from aftercall.errors import CrmCredentialsError
from aftercall.failures import park, rejection_record
from aftercall.ingest import connect, signatures
from aftercall.ingest.common import Ignored, Normalised
from aftercall.ingest.errors import IngestError, IngestUnavailableError, PayloadError, SignatureError
from aftercall.ingest.normalise import WEBHOOK_PLATFORMS, normalise, parse_json
from aftercall.models.event import DETAIL_TYPE, MAX_EVENT_BYTES
from aftercall.observability import logger
from aftercall.privacy import mask_phone
from aftercall.settings import IngestSettings
from aftercall.trace_context import current_trace_header

#: After a signature mismatch, re-read the secret (a rotation?) at most this often.
FORCED_REFRESH_INTERVAL = 60.0
PUT_EVENTS_FAILED_CONDITION = "IngestPutEventsFailed"

Verifier = Callable[[bytes, Mapping[str, str], list[str], float], object]
VERIFIERS: dict[str, Verifier] = {
    "vapi": signatures.verify_vapi,
    "retell": signatures.verify_retell,
    "elevenlabs": signatures.verify_elevenlabs,
    "generic": signatures.verify_generic,
}


class SigningSecrets:
    """The ingest signing secret: one JSON object with a key per platform, read with caching.

    ``{"vapi": "...", "retell": "...", "elevenlabs": "...", "generic": "..."}``; a key
    ``"<platform>_previous"`` is accepted too, so a rotation never refuses in-flight webhooks.
    Reading goes through :class:`aftercall.credentials.SecretCredentials` (Powertools Parameters).
    """

    def __init__(self, secret_id: str, max_age: int = 300, clock: Callable[[], float] = time.monotonic) -> None:
        self.secret_id = secret_id
        self._credentials = SecretCredentials(secret_id, (), max_age)
        self._clock = clock
        self._last_forced = float("-inf")
        self._lock = threading.Lock()

    def for_platform(self, platform: str, *, force: bool = False) -> list[str]:
        """The platform's current (and previous) secret, or 503: missing secret, missing key."""
        try:
            values = self._credentials.get(force=force)
        except CrmCredentialsError as exc:
            logger.error("ingest signing secret unreadable", extra={"secret_id": self.secret_id, "error": str(exc)})
            raise IngestUnavailableError(
                "secret_unavailable", "the signing secret cannot be read right now; retry later"
            ) from None
        secrets = [value for value in (values.get(platform), values.get(f"{platform}_previous")) if value]
        if not secrets:
            logger.error(
                "ingest signing secret has no key for the platform",
                extra={"secret_id": self.secret_id, "platform": platform},
            )
            raise IngestUnavailableError(
                "platform_not_configured", f"{platform} webhooks are not configured on this stack yet; retry later"
            )
        return secrets

    def may_force_refresh(self) -> bool:
        """At most one forced re-read per interval, so forged requests cannot flood Secrets Manager."""
        with self._lock:
            now = self._clock()
            if now - self._last_forced < FORCED_REFRESH_INTERVAL:
                return False
            self._last_forced = now
            return True


@dataclass(frozen=True)
class WebhookRequest:
    """An HTTP request as ingest sees it: lower-case header names and the body's exact bytes."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    @classmethod
    def from_function_url(cls, event: Mapping[str, Any]) -> WebhookRequest:
        """From a Lambda function URL event (payload 2.0): the raw body, base64-decoded when flagged."""
        context = event.get("requestContext") or {}
        method = str((context.get("http") or {}).get("method") or "")
        headers = {str(name).lower(): str(value) for name, value in (event.get("headers") or {}).items()}
        raw = event.get("body") or ""
        if event.get("isBase64Encoded"):
            try:
                body = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise PayloadError(
                    "invalid_body_encoding", "the body is flagged base64 but is not", status=400
                ) from None
        else:
            body = str(raw).encode("utf-8")
        return cls(method=method.upper(), path=str(event.get("rawPath") or "/"), headers=headers, body=body)


@dataclass(frozen=True)
class IngestResponse:
    """What the function URL answers; ``outcome`` is the PutEvents result (not sent to the vendor)."""

    status: int
    body: dict[str, Any]
    outcome: PutOutcome | None = None

    def to_function_url(self) -> dict[str, Any]:
        return {
            "statusCode": self.status,
            "headers": {"content-type": "application/json"},
            "body": json.dumps(self.body, separators=(",", ":")),
        }


@dataclass(frozen=True)
class PutOutcome:
    """The entry sent to PutEvents and what became of it."""

    entry: dict[str, Any]
    event_id: str | None
    error: str | None = None
    parked_message_id: str | None = None

    @property
    def accepted(self) -> bool:
        return self.event_id is not None


def _error(error: IngestError) -> IngestResponse:
    return IngestResponse(error.status, {"error": error.reason, "message": error.message})


def _entry_size(entry: Mapping[str, Any]) -> int:
    """As EventBridge counts it for the 256 KB limit (Source, DetailType and Detail; ingest sends no Resources)."""
    return sum(len(str(entry.get(key) or "").encode("utf-8")) for key in ("Source", "DetailType", "Detail"))


def _count(name: str, platform: str) -> None:
    with single_metric(name=name, unit=MetricUnit.Count, value=1, namespace=observability.NAMESPACE) as metric:
        metric.add_dimension(name="Platform", value=platform)


class IngestService:
    """One warm process's ingest: settings, the bus client and the cached signing secret."""

    def __init__(
        self,
        settings: IngestSettings,
        *,
        events_client: Any | None = None,
        secrets: SigningSecrets | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._events = events_client
        self._secrets = secrets
        self._clock = clock
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ seams
    def events(self) -> Any:
        return self._events if self._events is not None else aws.client("events")

    def secrets(self) -> SigningSecrets:
        with self._lock:
            if self._secrets is None:
                if not self.settings.secret_id:
                    logger.error("INGEST_SECRET_ID is not set; webhooks cannot be verified")
                    raise IngestUnavailableError("secret_unavailable", "the signing secret is not configured")
                self._secrets = SigningSecrets(self.settings.secret_id, self.settings.secret_max_age)
            return self._secrets

    # ------------------------------------------------------------------------------------------ webhooks
    def handle_function_url(self, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        """The function URL's answer to one request."""
        try:
            request = WebhookRequest.from_function_url(event)
        except IngestError as err:
            return _error(err).to_function_url()
        return self.handle(request, context).to_function_url()

    def handle(self, request: WebhookRequest, context: Any = None) -> IngestResponse:
        """Verify, normalise and put one webhook; never raises for a bad request."""
        platform = request.path.strip("/").lower()
        if platform not in VERIFIERS:
            paths = ", ".join(f"/{name}" for name in WEBHOOK_PLATFORMS)
            return IngestResponse(404, {"error": "unknown_platform", "message": f"POST to one of {paths}"})
        if request.method != "POST":
            return IngestResponse(405, {"error": "method_not_allowed", "message": "webhooks are POSTed"})
        try:
            response = self._handle(platform, request, context)
        except IngestError as err:
            log = logger.error if err.status >= 500 else logger.warning
            log("webhook refused", extra={"platform": platform, "status": err.status, "reason": err.reason})
            _count("WebhooksRefused" if err.status < 500 else "WebhooksFailed", platform)
            return _error(err)
        return response

    def _handle(self, platform: str, request: WebhookRequest, context: Any) -> IngestResponse:
        if len(request.body) > self.settings.max_body_bytes:
            raise PayloadError("body_too_large", f"the body is over {self.settings.max_body_bytes} bytes", status=413)
        self._verify(platform, request)
        result = normalise(platform, parse_json(request.body), self.settings.stage)
        if isinstance(result, Ignored):
            logger.info("webhook ignored", extra={"platform": platform, "reason": result.reason})
            _count("WebhooksIgnored", platform)
            return IngestResponse(200, {"status": "ignored", "reason": result.reason})
        outcome = self.put(result, context)
        if not outcome.accepted:
            kept = " It was kept in the failed-events queue." if outcome.parked_message_id else ""
            error = IngestUnavailableError(
                "bus_unavailable", f"the event bus did not accept the event; retry later.{kept}"
            )
            logger.error("webhook not put on the bus", extra={"platform": platform, "reason": error.reason})
            _count("WebhooksFailed", platform)
            return IngestResponse(error.status, {"error": error.reason, "message": error.message}, outcome)
        _count("WebhooksAccepted", platform)
        return IngestResponse(
            200,
            {"status": "accepted", "conversation_id": result.conversation_id, "event_id": outcome.event_id},
            outcome,
        )

    def _verify(self, platform: str, request: WebhookRequest) -> None:
        verify = VERIFIERS[platform]
        secrets = self.secrets()
        try:
            verify(request.body, request.headers, secrets.for_platform(platform), self._clock())
        except SignatureError as err:
            # A mismatch right after a rotation: re-read the secret once (rate-limited), then decide.
            if err.reason != "signature_mismatch" or not secrets.may_force_refresh():
                raise
            verify(request.body, request.headers, secrets.for_platform(platform, force=True), self._clock())

    # ------------------------------------------------------------------------------------------ Connect
    def handle_connect(self, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        """One Amazon Connect contact event from the rule on the default bus.

        Returns a report. A contact event that cannot be mapped is parked in the failed-events
        queue at once (retrying cannot fix it). Raises only when the event could neither be put
        nor parked, so Lambda's retries and ``OnFailure`` destination keep it.
        """
        report, _ = self.ingest_connect(event, context)
        return report

    def ingest_connect(self, event: Mapping[str, Any], context: Any = None) -> tuple[dict[str, Any], PutOutcome | None]:
        """:meth:`handle_connect`'s report plus the PutEvents outcome (None when nothing was put)."""
        try:
            result = connect.normalise(dict(event), self.settings.stage)
            if isinstance(result, Ignored):
                logger.info("connect event ignored", extra={"reason": result.reason})
                return {"status": "ignored", "reason": result.reason}, None
            outcome = self.put(result, context)
        except PayloadError as err:
            logger.error("connect event refused", extra={"reason": err.reason, "error": err.message})
            _count("ConnectEventsRefused", connect.PLATFORM)
            if not self.settings.failed_events_queue_url:
                raise
            record = rejection_record(dict(event), err, *self._context_ids(context))
            message_id = park(self.settings.failed_events_queue_url, record)
            report = {"status": "rejected", "reason": err.reason, "error": err.message, "parked_message_id": message_id}
            return report, None
        if outcome.accepted:
            _count("ConnectEventsAccepted", connect.PLATFORM)
            accepted = {"status": "accepted", "conversation_id": result.conversation_id, "event_id": outcome.event_id}
            return accepted, outcome
        if outcome.parked_message_id:
            return {"status": "parked", "conversation_id": result.conversation_id, "error": outcome.error}, outcome
        raise IngestUnavailableError("bus_unavailable", f"the event bus did not accept the event: {outcome.error}")

    # ------------------------------------------------------------------------------------------ the bus
    def put(self, normalised: Normalised, context: Any = None) -> PutOutcome:
        """PutEvents one detail; on refusal, keep the event in the failed-events queue when configured."""
        entry = {
            "Source": self.settings.event_source,
            "DetailType": DETAIL_TYPE,
            "Detail": json.dumps(normalised.detail, ensure_ascii=False, separators=(",", ":"), allow_nan=False),
            "EventBusName": self.settings.bus_name,
        }
        if (trace := current_trace_header()) is not None:  # one X-Ray trace from here to the EndHandler
            entry["TraceHeader"] = trace
        size = _entry_size(entry)
        if size > MAX_EVENT_BYTES:
            raise PayloadError(
                "event_too_large", f"the mapped event is {size} bytes; EventBridge takes {MAX_EVENT_BYTES}"
            )
        error: str
        try:
            response = self.events().put_events(Entries=[entry])
        except botocore.exceptions.ClientError as exc:
            details = exc.response.get("Error", {})
            error = f"{details.get('Code', 'ClientError')}: {details.get('Message', '')}"
        except botocore.exceptions.BotoCoreError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            results = response.get("Entries") or [{}]
            event_id = results[0].get("EventId")
            if event_id:
                logger.info(
                    "conversation ended event put on the bus",
                    extra={
                        "platform": normalised.platform,
                        "conversation_id": normalised.conversation_id,
                        "event_id": event_id,
                        "caller": mask_phone(normalised.detail.get("caller")),
                        "callee": mask_phone(normalised.detail.get("callee")),
                    },
                )
                return PutOutcome(entry, str(event_id))
            error = f"{results[0].get('ErrorCode', 'NoEventId')}: {results[0].get('ErrorMessage', '')}"
        logger.error(
            "the bus refused the event",
            extra={"platform": normalised.platform, "conversation_id": normalised.conversation_id, "error": error},
        )
        _count("IngestPutEventsFailed", normalised.platform)
        return PutOutcome(entry, None, error, self._park_unsent(normalised, error, context))

    def _park_unsent(self, normalised: Normalised, error: str, context: Any) -> str | None:
        queue = self.settings.failed_events_queue_url
        if not queue:
            return None
        request_id, function_arn = self._context_ids(context)
        envelope = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": DETAIL_TYPE,
            "source": self.settings.event_source,
            "account": function_arn.split(":")[4] if function_arn.count(":") >= 5 else "000000000000",
            "time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "region": self.settings.region,
            "resources": [],
            "detail": normalised.detail,
        }
        record = rejection_record(envelope, IngestUnavailableError("bus_unavailable", error), request_id, function_arn)
        record["requestContext"]["condition"] = PUT_EVENTS_FAILED_CONDITION
        record["responseContext"]["functionError"] = "Unhandled"
        try:
            message_id = park(queue, record)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, ValueError) as exc:
            logger.error(
                "could not keep the refused event in the failed-events queue",
                extra={"conversation_id": normalised.conversation_id, "error": f"{type(exc).__name__}: {exc}"},
            )
            return None
        logger.warning(
            "the refused event was kept in the failed-events queue for aftercall replay",
            extra={"conversation_id": normalised.conversation_id, "message_id": message_id},
        )
        return message_id

    @staticmethod
    def _context_ids(context: Any) -> tuple[str, str]:
        request_id = str(getattr(context, "aws_request_id", "") or uuid.uuid4())
        function_arn = str(getattr(context, "invoked_function_arn", "") or "arn:aws:lambda:::function:aftercall-ingest")
        return request_id, function_arn
