"""``aftercall inspect``: one conversation's story, from a deployed (or local) stack.

What it reads, each from where the stack keeps it: the Powertools idempotency record (processed,
in progress, its expiry), the action ledger (through :meth:`ActionLedger.describe` only: each
action's status, attempts and CRM object), the follow-up schedules the ledger names (still
waiting in EventBridge Scheduler, or fired and deleted), the failed-events messages of the
conversation (peeked, then made visible again), and its log lines from CloudWatch Logs Insights
over a bounded window. Everything dated goes into one timeline.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.exceptions

from aftercall.ledger import COMPLETED, ActionLedger, ActionRecord, record_key
from aftercall.models.event import CONVERSATION_ID
from aftercall_ops.operations import status as status_logic
from aftercall_ops.operations.dlq import FailedEvent
from aftercall_ops.operations.targets import Aws, Target, describe_aws_error

#: Logs Insights returns at most 10,000 rows; a conversation logs a few dozen lines.
MAX_LOG_LINES = 1000
DEFAULT_WINDOW_HOURS = 72
#: How long to wait for a Logs Insights query before reporting it as unfinished.
QUERY_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    source: str
    text: str
    problem: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "source": self.source, "text": self.text, "problem": self.problem}


@dataclass
class Inspection:
    """Everything found about one conversation; ``problems`` lists what failed or is in flight."""

    conversation_id: str
    stack: str | None
    idempotency: dict[str, Any] | None = None
    actions: list[ActionRecord] = field(default_factory=list)
    schedules: list[dict[str, Any]] = field(default_factory=list)
    failed_events: list[FailedEvent] = field(default_factory=list)
    log_lines: list[dict[str, Any]] = field(default_factory=list)
    log_window: tuple[datetime, datetime] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.idempotency or self.actions or self.failed_events or self.log_lines)

    @property
    def problems(self) -> list[str]:
        found: list[str] = []
        if self.idempotency and self.idempotency["status"] != COMPLETED:
            found.append(f"the conversation is {self.idempotency['status']} (being processed, or its invocation died)")
        found.extend(
            f"action {a.action} is {a.status} after {a.attempt} attempt(s)" + (f": {a.error}" if a.error else "")
            for a in self.actions
            if a.status != COMPLETED
        )
        found.extend(f"in the failed-events queue: {m.error}" for m in self.failed_events)
        if not self.found:
            found.append("nothing found: no record, no action, no failed event, no log line in the window")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def traces(self) -> list[str]:
        """The X-Ray traces its log lines name (Ingest → EventBridge → EndHandler is one per delivery)."""
        return sorted({line["trace"] for line in self.log_lines if line.get("trace")})

    def timeline(self) -> list[TimelineEntry]:
        entries: list[TimelineEntry] = []
        for line in self.log_lines:
            problem = str(line.get("level", "")).upper() in ("ERROR", "CRITICAL")
            entries.append(TimelineEntry(line["at"], f"log {line.get('log', '')}".strip(), line["text"], problem))
        for action in self.actions:
            if action.unanswered_write_at is not None:
                when = _epoch(action.unanswered_write_at)
                entries.append(TimelineEntry(when, "ledger", f"{action.action}: a write got no answer", True))
            if action.status != COMPLETED and action.lease_until is not None:
                when = _epoch(action.lease_until)
                entries.append(TimelineEntry(when, "ledger", f"{action.action}: in-progress lease ends", True))
        for message in self.failed_events:
            if message.sent_at is not None:
                text = f"into the failed-events queue ({message.shape}): {message.error}"
                entries.append(TimelineEntry(message.sent_at, "failed-events", text, True))
        for schedule in self.schedules:
            if schedule.get("at") is not None:
                entries.append(TimelineEntry(schedule["at"], "scheduler", _schedule_text(schedule)))
        return sorted(entries, key=lambda entry: entry.at)

    def to_json(self) -> dict[str, Any]:
        window = self.log_window
        return {
            "conversation_id": self.conversation_id,
            "stack": self.stack,
            "ok": self.ok,
            "problems": self.problems,
            "idempotency": self.idempotency,
            "actions": [_action_json(a) for a in self.actions],
            "schedules": [{**s, "at": s["at"].isoformat() if s.get("at") else None} for s in self.schedules],
            "failed_events": [m.to_json() for m in self.failed_events],
            "log_window": [window[0].isoformat(), window[1].isoformat()] if window else None,
            "xray_traces": self.traces,
            "timeline": [entry.to_json() for entry in self.timeline()],
            "notes": self.notes,
        }


def _epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _action_json(record: ActionRecord) -> dict[str, Any]:
    return {
        "action": record.action,
        "status": record.status,
        "attempts": record.attempt,
        "result": record.result,
        "error": record.error,
        "lease_until": _epoch(record.lease_until).isoformat() if record.lease_until else None,
        "expires_at": _epoch(record.expires_at).isoformat() if record.expires_at else None,
    }


def _schedule_text(schedule: dict[str, Any]) -> str:
    return f"follow-up {schedule['action']}: schedule {schedule['name']} {schedule['state']}"


def inspect(
    aws: Aws,
    target: Target,
    conversation_id: str,
    *,
    hours: int = DEFAULT_WINDOW_HOURS,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Inspection:
    """Gather the conversation's story. Raises ``ValueError`` for an id the contract would refuse."""
    if not re.match(CONVERSATION_ID, conversation_id):
        raise ValueError(f"{conversation_id!r} is not a conversation id (letters, digits and . _ : - only)")
    outputs = target.outputs
    table = outputs.get("IdempotencyTableName")
    if not table:
        raise ValueError(f"stack {target.stack_name} has no IdempotencyTableName output: is it an aftercall stack?")
    found = Inspection(conversation_id, target.stack_name)
    dynamodb = aws.client("dynamodb")
    found.idempotency = _idempotency_record(dynamodb, table, conversation_id)
    found.actions = ActionLedger(table, 0, client=dynamodb).describe(conversation_id)
    group = outputs.get("FollowUpScheduleGroupName")
    if group:
        found.schedules = _schedules(aws.client("scheduler"), group, found.actions)
    queue = outputs.get("FailedEventsQueueUrl")
    if queue:
        report = status_logic.status(aws.client("sqs"), queue, peek=1000, recent=1000, max_seconds=20)
        found.failed_events = [m for m in report.recent if m.conversation_id == conversation_id]
        if not report.complete:
            found.notes.append(f"only {report.peeked} of {report.depth} failed-events messages were peeked")
        found.notes.extend(report.release_failures)
    end = now or datetime.now(UTC)
    found.log_window = (end - timedelta(hours=hours), end)
    if target.stack_name:
        _logs(aws.client("logs"), target.stack_name, found, sleep)
    return found


def _idempotency_record(dynamodb: Any, table: str, conversation_id: str) -> dict[str, Any] | None:
    item = dynamodb.get_item(TableName=table, Key={"id": {"S": record_key(conversation_id)}}, ConsistentRead=True)
    record = item.get("Item")
    if not record:
        return None
    expires = int(record["expiration"]["N"]) if "expiration" in record else None
    lease = int(record["in_progress_expiration"]["N"]) / 1000 if "in_progress_expiration" in record else None
    return {
        "status": record.get("status", {}).get("S", "UNKNOWN"),
        "expires_at": _epoch(expires).isoformat() if expires else None,
        "in_progress_until": _epoch(lease).isoformat() if lease else None,
    }


def _schedules(scheduler: Any, group: str, actions: list[ActionRecord]) -> list[dict[str, Any]]:
    """The schedules the ledger's follow-up actions created: still waiting, or gone (fired and deleted)."""
    found = []
    for action in actions:
        name = (action.result or {}).get("schedule") if action.action.startswith("follow_up:") else None
        if not name:
            continue
        entry: dict[str, Any] = {"action": action.action, "name": name, "at": None}
        try:
            schedule = scheduler.get_schedule(Name=name, GroupName=group)
        except botocore.exceptions.ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            entry["state"] = "no longer exists (it fired and was deleted)"
        else:
            entry["state"] = f"waiting ({schedule.get('State', 'ENABLED')})"
            entry["at"] = _schedule_time(str(schedule.get("ScheduleExpression", "")))
        found.append(entry)
    return found


def _schedule_time(expression: str) -> datetime | None:
    match = re.fullmatch(r"at\((.+)\)", expression)
    if not match:
        return None
    try:
        return datetime.fromisoformat(match[1]).replace(tzinfo=UTC)
    except ValueError:
        return None


def _logs(logs: Any, stack: str, found: Inspection, sleep: Callable[[float], None]) -> None:
    """The conversation's log lines in the stack's log groups, through Logs Insights."""
    assert found.log_window is not None
    start, end = found.log_window
    try:
        groups = [
            g["logGroupName"]
            for page in logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=f"/aftercall/{stack}/")
            for g in page.get("logGroups", [])
        ]
        if not groups:
            found.notes.append(f"no log groups under /aftercall/{stack}/: log lines not searched")
            return
        query_id = logs.start_query(
            logGroupNames=groups[:50],
            startTime=int(start.timestamp()),
            endTime=math.ceil(end.timestamp()),  # whole seconds: rounding down would drop this second's lines
            queryString=(
                "fields @timestamp, @message, @log"
                f' | filter conversation_id = "{found.conversation_id}"'
                f" | sort @timestamp asc | limit {MAX_LOG_LINES}"
            ),
            limit=MAX_LOG_LINES,
        )["queryId"]
        waited = 0.0
        while True:
            response = logs.get_query_results(queryId=query_id)
            if response.get("status") not in ("Scheduled", "Running"):
                break
            if waited >= QUERY_WAIT_SECONDS:
                logs.stop_query(queryId=query_id)
                found.notes.append(
                    f"the log query did not finish within {QUERY_WAIT_SECONDS:.0f} s; lines may be missing"
                )
                break
            sleep(0.5)
            waited += 0.5
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        found.notes.append(f"log lines not read: {describe_aws_error(exc) or exc}")
        return
    if response.get("status") not in ("Complete", "Running", "Scheduled"):
        found.notes.append(f"the log query ended {response.get('status')}")
    for row in response.get("results", []):
        line = _log_line(row, found.conversation_id)
        if line is not None:
            found.log_lines.append(line)
    found.log_lines.sort(key=lambda line: line["at"])


def _log_line(row: list[dict[str, str]], conversation_id: str) -> dict[str, Any] | None:
    """One result row as a timeline line; rows of another conversation are dropped (defence in depth)."""
    fields = {cell["field"]: cell["value"] for cell in row}
    try:
        record = json.loads(fields.get("@message", ""))
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("conversation_id") != conversation_id:
        return None
    at = _log_time(record.get("timestamp"), fields.get("@timestamp"))  # the logger's own time is the precise one
    if at is None:
        return None
    text = str(record.get("message", ""))
    for key in ("action", "error", "result"):
        if key in record:
            value = record[key]
            text += f" {key}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}"
    group = fields.get("@log", "").rsplit("/", 1)[-1]
    request = str(record.get("function_request_id") or "")[:8]
    if request:  # the invocation (Lambda's async retries of it keep its request id)
        text = f"[{request}] {text}"
    trace = record.get("xray_trace_id")
    return {"at": at, "level": record.get("level", ""), "text": text, "log": group, "trace": trace}


def _log_time(insights: str | None, powertools: Any) -> datetime | None:
    for value in (insights, powertools):
        if not value:
            continue
        if isinstance(value, int | float) or str(value).isdigit():
            return _epoch(int(value) / 1000)
        text = str(value).replace(" ", "T", 1).replace(",", ".").replace("Z", "+00:00")  # Powertools: 12:53:13,150+0000
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            continue
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None
