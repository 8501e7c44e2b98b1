"""Vendor payloads → ``Conversation Ended`` details, with the ingest adapters themselves.

``aftercall emit --from vapi|retell|elevenlabs|connect FILE`` reads payloads saved from a vendor's
logs (one JSON payload, a JSON array of them, or JSON lines) and maps each exactly as the ingest
webhook would, so a team can replay calls the webhook missed. :func:`ingest_demo_webhooks` signs
one sample per platform and runs it through the real ingest service, for ``make demo``.
"""

from __future__ import annotations

import copy
import json
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from aftercall import aws
from aftercall.credentials import SecretCredentials
from aftercall.ingest import signatures
from aftercall.ingest.common import Ignored
from aftercall.ingest.errors import IngestError
from aftercall.ingest.normalise import normalise
from aftercall.ingest.service import IngestService, WebhookRequest
from aftercall.settings import IngestSettings
from aftercall_ops.operations.emit import DEFAULT_SOURCE, EmitInputError, RawItem, read_file, read_stream


class VendorPlatform(StrEnum):
    """What ``emit --from`` accepts (the generic webhook's body already is a detail: plain ``emit``)."""

    vapi = "vapi"
    retell = "retell"
    elevenlabs = "elevenlabs"
    connect = "connect"


VENDOR_PLATFORMS = tuple(platform.value for platform in VendorPlatform)
DEMO_PLATFORMS = ("vapi", "retell", "elevenlabs", "generic", "connect")
SAMPLES_DIR = Path(__file__).resolve().parents[3] / "events" / "vendor"
SAMPLE_FILES = {
    "vapi": "vapi_end_of_call_report.json",
    "retell": "retell_call_analyzed.json",
    "elevenlabs": "elevenlabs_post_call_transcription.json",
    "generic": "generic_conversation_ended.json",
    "connect": "connect_disconnected.json",
}


@dataclass
class VendorImport:
    """Details ready for :func:`aftercall_ops.operations.emit.prepare`, and the payloads skipped (not call ends)."""

    items: list[RawItem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def convert(platform: str, raw: Sequence[RawItem], environment: str | None) -> VendorImport:
    """Map every payload, or raise :class:`EmitInputError` listing each one that cannot be mapped."""
    if platform not in VENDOR_PLATFORMS:
        raise EmitInputError([f"--from must be one of {', '.join(VENDOR_PLATFORMS)}, got {platform!r}"])
    if environment is None:
        raise EmitInputError(["--from needs the target environment: pass --environment sandbox|live (or --stack)"])
    result = VendorImport()
    problems: list[str] = []
    for item in raw:
        try:
            mapped = normalise(platform, item.value, environment)
        except IngestError as err:
            problems.append(f"{item.origin}: {err.reason}: {err.message}")
            continue
        if isinstance(mapped, Ignored):
            result.skipped.append(f"{item.origin}: skipped, {mapped.reason}")
        else:
            result.items.append(RawItem(item.origin, mapped.detail))
    if problems:
        raise EmitInputError(problems)
    return result


def read_vendor_files(platform: str, paths: Sequence[Path], environment: str | None) -> VendorImport:
    """Read and map saved payloads; ``-`` reads JSON lines from standard input."""
    raw: list[RawItem] = []
    for path in paths:
        raw.extend(read_stream(sys.stdin) if str(path) == "-" else read_file(path))
    return convert(platform, raw, environment)


# ---------------------------------------------------------------------------------------------- demo


@dataclass(frozen=True)
class DemoWebhook:
    """One sample's trip through ingest: what the URL answered and what went on the bus."""

    platform: str
    status: int
    response: dict[str, Any]
    conversation_id: str | None
    event_id: str | None
    detail: dict[str, Any] | None


def load_sample(platform: str, samples_dir: Path = SAMPLES_DIR) -> Any:
    """The repo's sample payload for ``platform`` (events/vendor/), parsed."""
    return json.loads((samples_dir / SAMPLE_FILES[platform]).read_text(encoding="utf-8"))


def personalise(platform: str, payload: Any, suffix: str | None, customer_phone: str | None) -> Any:
    """A copy with a fresh call id (so a rerun is processed, not deduplicated) and the given customer."""
    payload = copy.deepcopy(payload)
    if platform == "vapi":
        message = payload["message"]
        if suffix:
            message["call"]["id"] = f"{message['call']['id']}-{suffix}"
        if customer_phone:
            message.setdefault("customer", {})["number"] = customer_phone
            message["call"].setdefault("customer", {})["number"] = customer_phone
    elif platform == "retell":
        call = payload["call"]
        if suffix:
            call["call_id"] = f"{call['call_id']}-{suffix}"
        if customer_phone:
            call.update(call_type="phone_call", direction="inbound", from_number=customer_phone)
    elif platform == "elevenlabs":
        data = payload["data"]
        if suffix:
            data["conversation_id"] = f"{data['conversation_id']}-{suffix}"
        if customer_phone:
            phone_call = data.setdefault("metadata", {}).setdefault("phone_call", {})
            phone_call.update(direction="inbound", external_number=customer_phone)
    elif platform == "generic":
        if suffix:
            payload["conversation_id"] = f"{payload['conversation_id']}-{suffix}"
        if customer_phone:
            payload["caller" if payload.get("direction") == "inbound" else "callee"] = customer_phone
    elif platform == "connect":
        detail = payload["detail"]
        if suffix:
            detail["contactId"] = f"{detail['contactId']}-{suffix}"
        if customer_phone:
            detail["customerEndpoint"] = {"type": "TELEPHONE_NUMBER", "address": customer_phone}
    return payload


def signed_request(platform: str, body: bytes, secret: str, now: float | None = None) -> WebhookRequest:
    """The request a platform would send: POST /<platform> with its signature headers over ``body``."""
    now = time.time() if now is None else now
    if platform == "vapi":
        headers = signatures.sign_vapi(body, secret, int(now))
    elif platform == "retell":
        headers = signatures.sign_retell(body, secret, int(now * 1000))
    elif platform == "elevenlabs":
        headers = signatures.sign_elevenlabs(body, secret, int(now))
    elif platform == "generic":
        headers = signatures.sign_generic(body, secret, int(now))
    else:
        raise ValueError(f"{platform} does not send signed webhooks")
    return WebhookRequest(
        method="POST", path=f"/{platform}", headers={**headers, "content-type": "application/json"}, body=body
    )


def ingest_demo_webhooks(
    bus: str,
    secrets: Mapping[str, str] | str,
    *,
    stage: str = "sandbox",
    source: str = DEFAULT_SOURCE,
    failed_events_queue_url: str | None = None,
    customer_phone: str | None = None,
    unique: bool = True,
    platforms: Sequence[str] = DEMO_PLATFORMS,
    events_client: Any | None = None,
) -> list[DemoWebhook]:
    """Sign each platform's sample and run it through the real ingest service onto ``bus``.

    ``secrets`` is either the signing secrets themselves (``{"vapi": ..., "retell": ...}``, stored
    for the run in a temporary Secrets Manager secret, as the deployed function reads them) or the
    id of an existing ingest secret. AWS is whatever boto3 reaches (``AWS_ENDPOINT_URL`` for the
    local stack). Webhooks are signed and verified; Connect's event goes through the rule path.
    """
    temporary: str | None = None
    if isinstance(secrets, str):
        secret_id = secrets
    else:
        temporary = secret_id = f"aftercall-demo/ingest-{uuid.uuid4().hex[:10]}"
        aws.client("secretsmanager").create_secret(Name=secret_id, SecretString=json.dumps(dict(secrets)))
    try:
        values = SecretCredentials(secret_id, (), max_age=0).get()
        settings = IngestSettings(
            stage=stage,
            bus_name=bus,
            event_source=source,
            secret_id=secret_id,
            failed_events_queue_url=failed_events_queue_url,
        )
        service = IngestService(settings, events_client=events_client)
        results: list[DemoWebhook] = []
        for platform in platforms:
            payload = personalise(
                platform, load_sample(platform), uuid.uuid4().hex[:8] if unique else None, customer_phone
            )
            if platform == "connect":
                report, outcome = service.ingest_connect(payload)
                status = 200 if report["status"] in ("accepted", "ignored") else 503
                response: dict[str, Any] = report
            else:
                body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
                answer = service.handle(signed_request(platform, body, values.get(platform, "")))
                status, response, outcome = answer.status, answer.body, answer.outcome
            accepted = outcome is not None and outcome.accepted
            results.append(
                DemoWebhook(
                    platform=platform,
                    status=status,
                    response=response,
                    conversation_id=response.get("conversation_id"),
                    event_id=outcome.event_id if accepted and outcome else None,
                    detail=json.loads(outcome.entry["Detail"]) if accepted and outcome else None,
                )
            )
        return results
    finally:
        if temporary:
            aws.client("secretsmanager").delete_secret(SecretId=temporary, ForceDeleteWithoutRecovery=True)
