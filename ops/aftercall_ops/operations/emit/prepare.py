"""Preparing entries: every input problem found before anything is sent; batches of 10 and 256 KB."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from aftercall.models.event import DETAIL_TYPE, MAX_EVENT_BYTES, MAX_STATE_DEPTH
from aftercall_ops.operations.emit.model import (
    DEFAULT_SOURCE,
    ENVIRONMENTS,
    MAX_BATCH_ENTRIES,
    MAX_REQUEST_BYTES,
    EmitInputError,
    PreparedEntry,
    RawItem,
)

# ---------------------------------------------------------------------------------------------- preparing


def entry_size(entry: dict[str, Any]) -> int:
    """The entry's size exactly as EventBridge computes it for the 256 KB limit.

    Per "Calculating PutEvents event entry size": Time counts 14 bytes when present; Source,
    DetailType, Detail and each Resources element count their UTF-8 bytes. (The event delivered
    to targets is larger, but the limit applies to this figure.)
    """
    size = 14 if entry.get("Time") is not None else 0
    for key in ("Source", "DetailType", "Detail"):
        value = entry.get(key)
        if value is not None:
            size += len(str(value).encode("utf-8"))
    for resource in entry.get("Resources") or ():
        if resource is not None:
            size += len(str(resource).encode("utf-8"))
    return size


def prepare(
    items: Sequence[RawItem],
    *,
    bus: str,
    source: str | None,
    environment: str | None,
    validate: bool = False,
) -> list[PreparedEntry]:
    """Turn read values into PutEvents entries, or raise :class:`EmitInputError` listing every problem.

    A value is an EventBridge envelope (has ``detail-type``/``detail``) or a bare detail. The
    detail's ``environment`` is set to ``environment`` when missing and must equal it when present,
    so a sandbox run can never put a live event on the bus by accident.
    """
    if environment is not None and environment not in ENVIRONMENTS:
        raise EmitInputError([f"--environment must be one of {', '.join(ENVIRONMENTS)}, got {environment!r}"])
    problems: list[str] = []
    entries: list[PreparedEntry] = []
    for item in items:
        try:
            entries.append(_prepare_one(item, bus=bus, source=source, environment=environment, validate=validate))
        except ValueError as exc:
            problems.append(f"{item.origin}: {exc}")
        except RecursionError:
            problems.append(f"{item.origin}: the event nests too deep (at most {MAX_STATE_DEPTH} levels)")
    if problems:
        raise EmitInputError(problems)
    return entries


def _prepare_one(
    item: RawItem, *, bus: str, source: str | None, environment: str | None, validate: bool
) -> PreparedEntry:
    value = item.value
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object (an event or its detail), got {type(value).__name__}")
    resources: list[str] = []
    if "detail-type" in value or "detail" in value:
        detail_type = value.get("detail-type")
        if detail_type != DETAIL_TYPE:
            raise ValueError(f"detail-type is {detail_type!r}; aftercall only emits {DETAIL_TYPE!r} events")
        detail = value.get("detail")
        if not isinstance(detail, dict):
            raise ValueError("the event's detail must be a JSON object")
        event_source = source or value.get("source") or DEFAULT_SOURCE
        raw_resources = value.get("resources") or []
        if not isinstance(raw_resources, list) or not all(isinstance(r, str) for r in raw_resources):
            raise ValueError("the event's resources must be a list of strings")
        resources = raw_resources
    else:
        detail = value
        event_source = source or DEFAULT_SOURCE
    detail = dict(detail)
    found = detail.get("environment")
    if environment is not None:
        if found is None:
            detail["environment"] = environment
        elif found != environment:
            raise ValueError(
                f"detail.environment is {found!r} but the target is {environment!r}; "
                f"fix the event or pass --environment {found} for the matching stack"
            )
    elif found is None:
        raise ValueError("detail.environment is missing; pass --environment sandbox|live (or --stack) to set it")
    if validate:
        _validate(detail)
    conversation_id = detail.get("conversation_id")
    entry: dict[str, Any] = {
        "Source": str(event_source),
        "DetailType": DETAIL_TYPE,
        "Detail": json.dumps(detail, ensure_ascii=False, separators=(",", ":"), allow_nan=False),
        "EventBusName": bus,
    }
    if resources:
        entry["Resources"] = resources
    size = entry_size(entry)
    if size > MAX_EVENT_BYTES:
        raise ValueError(
            f"entry is {size:,} bytes, over EventBridge's {MAX_EVENT_BYTES:,}-byte limit "
            f"(conversation {conversation_id}); shrink conv.state or store the bulk elsewhere (e.g. S3) "
            "and put a reference in the event"
        )
    return PreparedEntry(item.origin, conversation_id if isinstance(conversation_id, str) else None, entry, size)


def _validate(detail: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from aftercall.handler import describe_validation_error
    from aftercall.models.event import ConversationEndedDetail

    try:
        ConversationEndedDetail.model_validate(detail)
    except ValidationError as exc:
        raise ValueError(f"not a valid detail: {describe_validation_error(exc)}") from None


def batches(entries: Sequence[PreparedEntry]) -> Iterator[list[PreparedEntry]]:
    """Consecutive batches of at most 10 entries and at most 256 KB in total."""
    batch: list[PreparedEntry] = []
    batch_bytes = 0
    for entry in entries:
        if batch and (len(batch) == MAX_BATCH_ENTRIES or batch_bytes + entry.size > MAX_REQUEST_BYTES):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(entry)
        batch_bytes += entry.size
    if batch:
        yield batch
