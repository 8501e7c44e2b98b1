"""Reading the local stack as a client of it would, to account for every conversation and count its effects."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aftercall.follow_ups.schedule import schedule_name
from aftercall.ledger import COMPLETED, record_key
from aftercall_ops.emulator.stack import LocalStack
from aftercall_ops.operations.chaos.plan import (
    CONVERSATION_RECORD_PREFIX,
    MARKER,
    ChaosReport,
    Checkpoint,
    expected_effects,
)
from aftercall_ops.operations.status import status

# --- reading the stack ------------------------------------------------------------------------------


def processed_conversations(stack: LocalStack) -> set[str]:
    """Conversations whose Powertools idempotency record is COMPLETED (the handler finished them)."""
    paginator = stack.client("dynamodb").get_paginator("scan")
    pages = paginator.paginate(
        TableName=stack.outputs["IdempotencyTableName"],
        FilterExpression="begins_with(id, :prefix) AND #status = :completed",
        ExpressionAttributeNames={"#status": "status", "#data": "data"},
        ExpressionAttributeValues={":prefix": {"S": CONVERSATION_RECORD_PREFIX}, ":completed": {"S": COMPLETED}},
        ProjectionExpression="#data",
        ConsistentRead=True,
    )
    done: set[str] = set()
    for page in pages:
        for item in page.get("Items", []):
            data = json.loads(item.get("data", {}).get("S", "{}"))
            if isinstance(data, dict) and isinstance(data.get("conversation_id"), str):
                done.add(data["conversation_id"])
    return done


def _conversation_of(payload: Any) -> str | None:
    detail = payload.get("detail") if isinstance(payload, dict) else None
    conversation_id = detail.get("conversation_id") if isinstance(detail, dict) else None
    return conversation_id if isinstance(conversation_id, str) else None


def dlq_conversations(stack: LocalStack) -> tuple[set[str], int]:
    """Conversations in the failed-events queue (peeked as ``aftercall status`` does) and its depth."""
    report = status(stack.client("sqs"), stack.outputs["FailedEventsQueueUrl"], peek=1_000_000, recent=1_000_000)
    if not report.complete or report.release_failures:
        raise RuntimeError(f"could not read the whole failed-events queue: {report.release_failures}")
    found = {message.conversation_id for message in report.recent if message.conversation_id}
    return found, report.depth


def checkpoint(stack: LocalStack, emitted: Iterable[str], label: str, started: float) -> Checkpoint:
    """Account for every emitted conversation. Read in flight first, then the failed-events queue,
    then the processed records: an event moves only that way, so it is seen at least once."""
    emitted = set(emitted)
    in_flight = {cid for cid in (_conversation_of(p) for p in stack.in_flight()) if cid}
    in_dlq, _ = dlq_conversations(stack)
    processed = processed_conversations(stack)
    missing = sorted(emitted - in_flight - in_dlq - processed)
    return Checkpoint(
        time.monotonic() - started,
        label,
        len(emitted),
        len(emitted & processed),
        len(emitted & in_dlq),
        len(emitted & in_flight),
        missing,
    )


def _marked(text: str) -> str | None:
    match = MARKER.search(text)
    return match.group(1) if match else None


def _ledger_completed(stack: LocalStack, conversation_ids: Sequence[str], action: str) -> set[str]:
    """Conversations whose ``action`` is COMPLETED: in the ledger's entry on the conversation's
    idempotency record, or among the results of the report it stores once completed (batched reads)."""
    dynamodb = stack.client("dynamodb")
    table = stack.outputs["IdempotencyTableName"]
    done: set[str] = set()
    for start in range(0, len(conversation_ids), 50):
        batch = conversation_ids[start : start + 50]
        by_key = {record_key(cid): cid for cid in batch}
        keys = [{"id": {"S": key}} for key in by_key]
        request: dict[str, Any] = {table: {"Keys": keys, "ConsistentRead": True}}
        for _ in range(20):
            answer = dynamodb.batch_get_item(RequestItems=request)
            for item in answer.get("Responses", {}).get(table, []):
                if item.get(f"a.{action}", {}).get("M", {}).get("s", {}).get("S") == COMPLETED:
                    done.add(by_key[item["id"]["S"]])
                elif item.get("status", {}).get("S") == COMPLETED and "data" in item:
                    report = json.loads(item["data"]["S"])
                    if report.get("actions", {}).get(action, {}).get("status") in ("done", "already_done"):
                        done.add(report["conversation_id"])
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                break
    return done


def _schedule_names(stack: LocalStack) -> Counter[str]:
    scheduler = stack.client("scheduler")
    names: Counter[str] = Counter()
    kwargs: dict[str, Any] = {"GroupName": stack.outputs["FollowUpScheduleGroupName"], "MaxResults": 100}
    while True:
        answer = scheduler.list_schedules(**kwargs)
        names.update(schedule["Name"] for schedule in answer.get("Schedules", []))
        if not answer.get("NextToken"):
            return names
        kwargs["NextToken"] = answer["NextToken"]


def _drain_notifications(stack: LocalStack, queue_url: str) -> Counter[str]:
    """Messages the notifications topic delivered to our subscriber, by conversation."""
    sqs = stack.client("sqs")
    counts: Counter[str] = Counter()
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not messages:
            return counts
        for message in messages:
            envelope = json.loads(message["Body"])
            counts[envelope["MessageAttributes"]["conversation_id"]["Value"]] += 1
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
        )


def subscribe_to_notifications(stack: LocalStack) -> str:
    sqs = stack.client("sqs")
    url = str(sqs.create_queue(QueueName=f"{stack.stack_name}-chaos-notifications")["QueueUrl"])
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    stack.client("sns").subscribe(TopicArn=stack.outputs["NotificationsTopicArn"], Protocol="sqs", Endpoint=arn)
    return url


def verify_effects(
    stack: LocalStack, details: Sequence[Mapping[str, Any]], notifications_url: str, report: ChaosReport
) -> None:
    """Count every conversation's effects against what the End function asks for."""
    notes = Counter(cid for note in stack.crm.notes if (cid := _marked(note["properties"].get("hs_note_body", ""))))
    tickets = Counter(cid for t in stack.crm.tickets if (cid := _marked(t["properties"].get("content", ""))))
    ids = [str(detail["conversation_id"]) for detail in details]
    dispositions = _ledger_completed(stack, ids, "disposition")
    notified = _ledger_completed(stack, ids, "notification:team")
    published = _drain_notifications(stack, notifications_url)
    schedules = _schedule_names(stack)
    effects: Counter[str] = Counter()
    wanted: Counter[str] = Counter()
    extra: Counter[str] = Counter()
    short: Counter[str] = Counter()
    expected_names: set[str] = set()
    short_ids: set[str] = set()

    def compare(kind: str, cid: str, got: int, want: int) -> None:
        effects[kind] += got
        wanted[kind] += want
        if got > want:
            extra[kind] += got - want
            report.problems.append(f"{cid}: {got} {kind} (want {want})")
        elif got < want:
            short[kind] += want - got
            short_ids.add(cid)
            report.problems.append(f"{cid}: {got} {kind} (want {want})")

    for detail in details:
        cid = str(detail["conversation_id"])
        expected = expected_effects(detail)
        compare("notes", cid, notes[cid], 1)
        compare("tickets", cid, tickets[cid], expected.tickets)
        compare("dispositions", cid, int(cid in dispositions), int(expected.disposition))
        compare("notifications", cid, published[cid], int(expected.notification))
        compare("notifications_recorded", cid, int(cid in notified), int(expected.notification))
        names = {schedule_name(cid, kind) for kind in expected.follow_ups}
        expected_names |= names
        compare("follow_ups", cid, sum(schedules[name] for name in names), len(names))
    strangers = sum(count for name, count in schedules.items() if name not in expected_names)
    if strangers:
        extra["follow_ups"] += strangers
        report.problems.append(f"{strangers} follow-up schedule(s) no conversation asked for")
    known = set(ids)
    for kind, counts in (("notes", notes), ("tickets", tickets), ("notifications", published)):
        stray = sum(count for cid, count in counts.items() if cid not in known)
        if stray:
            extra[kind] += stray
            report.problems.append(f"{stray} {kind} of no emitted conversation")
    report.effects = dict(effects)
    report.expected_effects = dict(wanted)
    report.duplicate_effects = dict(extra)
    report.missing_effects = dict(short)
    report.short_of_effects = short_ids


def count_requests(stack: LocalStack, report: ChaosReport, faults_cleared_at: float) -> None:
    requests = stack.crm.requests
    kinds: Counter[str] = Counter(r.fault for r in requests if r.fault and r.fault != "latency")
    kinds["unauthorized"] = sum(1 for r in requests if r.status == 401)
    report.crm_requests = len(requests)
    report.crm_requests_under_faults = sum(1 for r in requests if r.received < faults_cleared_at)
    report.faults_injected = dict(sorted(kinds.items()))
