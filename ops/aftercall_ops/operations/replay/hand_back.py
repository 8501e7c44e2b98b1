"""Handing an event back: PutEvents in batches like emit, or one synchronous Invoke of the End function."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import botocore.exceptions

from aftercall.models.event import MAX_EVENT_BYTES
from aftercall_ops.operations.dlq import FailedEvent
from aftercall_ops.operations.emit import FatalSendError, RetryPolicy, entry_size, put_batch
from aftercall_ops.operations.replay.replay_pass import HandBack, ReplayPass, event_id_of
from aftercall_ops.operations.replay.report import FATAL_INVOKE, MAX_CONSECUTIVE_UNREACHABLE, SQS_BATCH
from aftercall_ops.operations.targets import Client, describe_aws_error


def entry_for(event: dict[str, Any], bus: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "Source": str(event.get("source") or ""),
        "DetailType": str(event.get("detail-type") or ""),
        "Detail": json.dumps(event.get("detail"), ensure_ascii=False, separators=(",", ":")),
        "EventBusName": bus,
    }
    resources = event.get("resources")
    if isinstance(resources, list) and resources and all(isinstance(r, str) for r in resources):
        entry["Resources"] = resources
    return entry


def put_events(
    state: ReplayPass, events: Client, bus: str, messages: Sequence[FailedEvent], policy: RetryPolicy
) -> list[tuple[FailedEvent, HandBack]]:
    results: list[tuple[FailedEvent, HandBack]] = []
    sendable: list[tuple[FailedEvent, dict[str, Any]]] = []
    for message in messages:
        assert message.event is not None  # triage only passes recognised messages
        entry = entry_for(message.event, bus)
        size = entry_size(entry)
        if not entry["Source"] or not entry["DetailType"]:
            results.append((message, HandBack(False, "the event has no source or detail-type to put", False)))
        elif size > MAX_EVENT_BYTES:
            results.append((message, HandBack(False, f"entry is {size:,} bytes, over {MAX_EVENT_BYTES:,}", False)))
        else:
            sendable.append((message, entry))
    # Batches of ≤10 and ≤256 KB in total, like emit.
    chunk: list[tuple[FailedEvent, dict[str, Any]]] = []
    chunks: list[list[tuple[FailedEvent, dict[str, Any]]]] = []
    chunk_bytes = 0
    for message, entry in sendable:
        size = entry_size(entry)
        if chunk and (len(chunk) == SQS_BATCH or chunk_bytes + size > MAX_EVENT_BYTES):
            chunks.append(chunk)
            chunk, chunk_bytes = [], 0
        chunk.append((message, entry))
        chunk_bytes += size
    if chunk:
        chunks.append(chunk)
    for batch in chunks:
        ticket = state.put_started()
        event_ids: list[str | None] = [event_id_of(message) for message, _ in batch]
        try:
            outcomes, _ = put_batch(events, [entry for _, entry in batch], policy, sleep=state.pause)
            event_ids.extend(outcome.event_id for outcome in outcomes)
        except FatalSendError as exc:
            state.abort(f"PutEvents failed: {exc}")
            results.extend((message, HandBack(False, f"PutEvents failed: {exc}", False)) for message, _ in batch)
            continue
        finally:
            # Also on failure: a call that timed out may still have put some events on the bus.
            state.put_finished(ticket, event_ids)
        state.note_batch([outcome for outcome in outcomes if not outcome.accepted], len(outcomes))
        for (message, _), outcome in zip(batch, outcomes, strict=True):
            if outcome.accepted:
                results.append(
                    (message, HandBack(True, f"put on the bus as event {outcome.event_id}", True, outcome.event_id))
                )
            else:
                error = f"PutEvents did not accept it: {outcome.error_code}: {outcome.error_message}"
                results.append((message, HandBack(False, error, False)))
    return results


def invoke(state: ReplayPass, lam: Client, function: str, message: FailedEvent) -> HandBack:
    """One synchronous invoke; a function error, throttle or timeout means "failed again"."""
    assert message.event is not None
    state.handed_back(event_id_of(message))
    try:
        response = lam.invoke(
            FunctionName=function,
            InvocationType="RequestResponse",
            Payload=json.dumps(message.event).encode("utf-8"),
        )
        raw = response["Payload"].read()
    except botocore.exceptions.ReadTimeoutError:
        return HandBack(
            False,
            f"no answer within {lam.meta.config.read_timeout:g} s (not retried: the run may still finish). The "
            "message stays; replaying it later is harmless (processing is idempotent per conversation)",
            False,
        )
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "ClientError"))
        text = f"{code}: {error.get('Message', '')}"
        if code in FATAL_INVOKE:
            state.abort(f"cannot invoke {function}: {describe_aws_error(exc) or text}")
        return HandBack(False, f"invoke failed: {text}", False)
    except botocore.exceptions.BotoCoreError as exc:
        with state.lock:
            state.unreachable_in_a_row += 1
            give_up = state.unreachable_in_a_row >= MAX_CONSECUTIVE_UNREACHABLE
        text = describe_aws_error(exc) or str(exc)
        if give_up:
            state.abort(f"Lambda is unreachable: {text}")
        return HandBack(False, f"invoke failed: {text}", False)
    with state.lock:
        state.unreachable_in_a_row = 0
    try:
        payload: Any = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode("utf-8", "replace")[:300]
    if response.get("FunctionError"):
        if isinstance(payload, dict):
            reason = f"{payload.get('errorType', 'Error')}: {payload.get('errorMessage', '')}"
        else:
            reason = str(payload)
        return HandBack(False, f"the function failed again: {reason}", False)
    status = int(response.get("StatusCode", 200))
    if status >= 300:
        return HandBack(False, f"invoke answered status {status}", False)
    if isinstance(payload, dict) and payload.get("status") == "rejected":
        parked = payload.get("parked_as")
        reason = f"{payload.get('error_type', 'Error')}: {payload.get('error', '')}"
        if isinstance(parked, str) and parked:
            state.see(parked)
            return HandBack(
                False,
                f"rejected again ({reason}); the function re-parked it as message {parked}, "
                "so this older copy was deleted",
                True,
                parked_as=parked,
            )
        return HandBack(False, f"rejected again: {reason}", False)
    if isinstance(payload, dict) and payload.get("duplicate"):
        return HandBack(True, "invoked: already processed before (duplicate), nothing done twice", True)
    status_text = payload.get("status") if isinstance(payload, dict) else None
    return HandBack(True, f"invoked: {status_text or 'ok'}", True)
