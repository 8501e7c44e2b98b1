"""The chaos run: N conversations through the local stack while the CRM, the credentials and Lambda fail.

What it does (``tests/system/test_chaos.py`` runs it CI-sized, ``bench/chaos.py`` at 2,000):

1. A local stack (:class:`aftercall_ops.local.LocalStack`: moto, the fake HubSpot, the real
   EndHandler in worker processes with Lambda's async retries, timeouts that kill the worker, and
   ``OnFailure`` records), with a small function timeout and a short CRM read timeout
   (``CRM_READ_TIMEOUT_SECONDS``), so hangs past the client's timeout and kills at the deadline
   happen within seconds.
2. N generated conversations (:func:`aftercall_ops.generate.conversations`), emitted in waves
   through PutEvents as the stack takes them. A seeded share is emitted twice: half of those in the
   same PutEvents batch as the original (the two copies run concurrently), half a wave or two later.
3. The fake CRM fails about 30% of requests, drawn from its seeded RNG: 429 with ``Retry-After``,
   500, hangs past the client's read timeout that are then applied, reset connections, 500s after
   the write was applied, and answers that trickle in until Lambda stops the invocation at its
   deadline, in the middle of the action. Midway the CRM's token is rotated and, a little later,
   the secret (in between every request is refused with 401).
4. Checkpoints: every conversation emitted so far is processed (its Powertools idempotency record
   is ``COMPLETED``), in the failed-events queue, or in flight (in the delivery queue or held by
   the dispatcher). They are read in the order an event moves (in flight, then the queue, then the
   records), so an event moving on while they are read is seen at least once.
5. The CRM recovers (faults cleared); once the stack is idle, one ``aftercall replay`` pass
   (the CLI, as an operator runs it); then every conversation's effects are counted against what
   the default End function (``functions/end_handler/end_function.py``) asks for: exactly one
   note, the ticket if ``support_needed``, the disposition if outbound, the follow-up schedules,
   the team notification for hot leads.

Only what a client of the stack can see is read: the fake CRM's objects and request log, the
idempotency table, the queues, Scheduler, an SQS queue subscribed to the notifications topic and
the dispatcher's counters.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aftercall.follow_ups import schedule_name
from aftercall.ledger import COMPLETED, record_key
from aftercall_ops.demo import HOT_LEADS
from aftercall_ops.emit import RawItem, prepare, put_batch
from aftercall_ops.generate import conversations
from aftercall_ops.local import LocalStack
from aftercall_ops.moto_fixes import serialise_sqs_deletes
from aftercall_ops.replay import queue_depth
from aftercall_ops.status import status

#: The kinds of CRM failure and their shares of the failing requests.
FAULT_MIX: Mapping[str, float] = {
    "rate_limit": 0.28,  # 429 with Retry-After
    "status": 0.24,  # 500, nothing applied
    "hang": 0.15,  # no answer within the client's read timeout; applied a little later
    "reset": 0.14,  # the connection is reset
    "after_commit_status": 0.14,  # applied, then 500
    # applied, then the answer trickles in a byte at a time: the invocation is still reading it when
    # Lambda stops it at its deadline, in the middle of the action
    "trickle": 0.05,
}
#: Powertools' idempotency records of whole conversations (``key_prefix`` in aftercall.handler).
CONVERSATION_RECORD_PREFIX = "aftercall.conversation#"
_MARKER = re.compile(r"aftercall-(\S+?)(?:</p>|$|\s)")


@dataclass(frozen=True)
class ChaosConfig:
    """One chaos run. Durations are seconds; ``fault_rate`` is the share of CRM requests that fail."""

    conversations: int = 2000
    seed: int = 2026
    duplicate_share: float = 0.2
    concurrent_share: float = 0.5  # of the duplicates: emitted in the same batch as the original
    fault_rate: float = 0.3
    function_timeout: float = 4.0
    crm_read_timeout: float = 1.0
    #: How long a hung request waits before the fake CRM applies it and answers (past the read timeout).
    hang_seconds: float = 1.2
    retry_after: str = "1"
    #: Conversations per wave. A wave goes out once the delivery queue holds fewer events than there
    #: are workers, so the run spreads over its whole length whatever the machine's speed.
    wave_conversations: int = 20
    #: Checkpoints while the waves go out (then one when idle, one after the replay).
    checkpoints: int = 4
    #: When the CRM's token is rotated (a share of the waves), and how much later the secret follows.
    rotate_at: float = 0.4
    rotation_gap: float = 3.0
    #: Environments (ReservedConcurrency); None: the template's default.
    workers: int | None = 8
    retry_delays: tuple[float, ...] = (0.2, 0.4)
    idle_timeout: float = 600.0

    def check(self) -> None:
        if self.conversations < 1:
            raise ValueError("conversations must be at least 1")
        for name in ("duplicate_share", "concurrent_share", "fault_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        if not self.crm_read_timeout < self.hang_seconds <= 2 * self.crm_read_timeout:
            # Past the client's timeout, but within the window the HubSpot adapter waits for an
            # unanswered create (read timeout + settle): later than that is a documented limit.
            raise ValueError("hang_seconds must be more than crm_read_timeout and at most twice it")
        if self.wave_conversations < 1:
            raise ValueError("wave_conversations must be at least 1")
        if not 0 < self.rotate_at < 1:
            raise ValueError("rotate_at must be a share of the waves between 0 and 1")
        if self.rotation_gap < 0:
            raise ValueError("rotation_gap must not be negative")


@dataclass
class Checkpoint:
    """One sample: every conversation emitted so far is processed, parked or in flight."""

    at_seconds: float
    label: str
    emitted: int
    processed: int
    in_dlq: int
    in_flight: int
    missing: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "at_seconds": round(self.at_seconds, 1),
            "label": self.label,
            "emitted": self.emitted,
            "processed": self.processed,
            "in_dlq": self.in_dlq,
            "in_flight": self.in_flight,
            "missing": len(self.missing),
            "missing_ids": self.missing[:20],
        }


@dataclass(frozen=True)
class Expected:
    """What the default End function does for one conversation."""

    tickets: int
    disposition: bool
    follow_ups: tuple[str, ...]
    notification: bool


def expected_effects(detail: Mapping[str, Any]) -> Expected:
    """The default End function's rules (functions/end_handler/end_function.py), restated."""
    state = detail["state"]
    outbound = detail["direction"] == "outbound"
    customer_phone = detail["callee"] if outbound else detail["caller"]
    follow_ups = []
    if state.get("follow_up_required") and customer_phone:
        follow_ups.append("callback")
    disposition = state.get("disposition", "connected") if outbound else None
    if disposition == "info_requested" and detail.get("customer_email"):
        follow_ups.append("email")
    return Expected(
        tickets=1 if state.get("support_needed") else 0,
        disposition=outbound,
        follow_ups=tuple(sorted(follow_ups)),
        notification=disposition in HOT_LEADS,
    )


@dataclass
class ChaosReport:
    """What a run did and found; ``ok`` when nothing was duplicated, lost or left in a queue."""

    config: ChaosConfig
    conversations: int = 0
    events_emitted: int = 0
    duplicate_emissions: int = 0
    concurrent_duplicate_emissions: int = 0
    seconds: float = 0.0
    checkpoints: list[Checkpoint] = field(default_factory=list)
    dlq_before_replay: int = 0
    replay: dict[str, Any] = field(default_factory=dict)
    dlq_after_replay: int = 0
    in_flight_after_replay: int = 0
    crm_requests: int = 0
    #: Requests the CRM received while the faults were on (the share of failures is counted on these).
    crm_requests_under_faults: int = 0
    faults_injected: dict[str, int] = field(default_factory=dict)
    dispatcher: dict[str, int] = field(default_factory=dict)
    effects: dict[str, int] = field(default_factory=dict)
    expected_effects: dict[str, int] = field(default_factory=dict)
    duplicate_effects: dict[str, int] = field(default_factory=dict)
    missing_effects: dict[str, int] = field(default_factory=dict)
    unprocessed: list[str] = field(default_factory=list)
    #: Conversations with an effect missing (no note, no ticket that was asked for, ...).
    short_of_effects: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        """Effects performed more often than the End function asked for (a second note, ...)."""
        return sum(self.duplicate_effects.values())

    @property
    def lost(self) -> int:
        """Conversations missing at a checkpoint, unprocessed at the end, or missing an effect."""
        missing = {cid for checkpoint in self.checkpoints for cid in checkpoint.missing}
        return len(missing | set(self.unprocessed) | self.short_of_effects)

    @property
    def fault_share(self) -> float:
        injected = sum(count for kind, count in self.faults_injected.items() if kind != "unauthorized")
        return injected / self.crm_requests_under_faults if self.crm_requests_under_faults else 0.0

    @property
    def ok(self) -> bool:
        return (
            self.duplicates == 0
            and self.lost == 0
            and self.dlq_after_replay == 0
            and self.in_flight_after_replay == 0
            and not self.problems
        )

    def to_json(self) -> dict[str, Any]:
        config = self.config
        return {
            "ok": self.ok,
            "conversations": self.conversations,
            "duplicates": self.duplicates,
            "lost": self.lost,
            "dlq_after_replay": self.dlq_after_replay,
            "seconds": round(self.seconds, 1),
            "events_emitted": self.events_emitted,
            "duplicate_emissions": self.duplicate_emissions,
            "concurrent_duplicate_emissions": self.concurrent_duplicate_emissions,
            "dlq_before_replay": self.dlq_before_replay,
            "replay": self.replay,
            "in_flight_after_replay": self.in_flight_after_replay,
            "crm_requests": self.crm_requests,
            "crm_requests_under_faults": self.crm_requests_under_faults,
            "faults_injected": self.faults_injected,
            "fault_share": round(self.fault_share, 3),
            "invocations": self.dispatcher.get("invocations", 0),
            "timeouts": self.dispatcher.get("timeouts", 0),
            "dispatcher": self.dispatcher,
            "effects": self.effects,
            "expected_effects": self.expected_effects,
            "duplicate_effects": self.duplicate_effects,
            "missing_effects": self.missing_effects,
            "checkpoints": [checkpoint.to_json() for checkpoint in self.checkpoints],
            "problems": self.problems[:50],
            "settings": {
                "seed": config.seed,
                "duplicate_share": config.duplicate_share,
                "fault_rate": config.fault_rate,
                "function_timeout_s": config.function_timeout,
                "crm_read_timeout_s": config.crm_read_timeout,
                "hang_s": config.hang_seconds,
                "retry_after": config.retry_after,
                "wave_conversations": config.wave_conversations,
                "workers": self.dispatcher.get("workers", 0),
            },
        }


# --- the plan ------------------------------------------------------------------------------------


def fault_rules(config: ChaosConfig) -> list[dict[str, Any]]:
    """Fault rules for the fake CRM that fail ``fault_rate`` of all requests, split as :data:`FAULT_MIX`.

    The fake tries rules in order and applies the first whose draw succeeds, so each rule's
    probability is its share of what the rules before it left.
    """
    rules = []
    left = 1.0
    for kind, weight in FAULT_MIX.items():
        share = config.fault_rate * weight
        probability = min(1.0, share / left) if left > 0 else 0.0
        left -= share
        rule: dict[str, Any] = {"kind": kind, "probability": round(probability, 6)}
        if kind == "rate_limit":
            rule["retry_after"] = config.retry_after
        elif kind in ("status", "after_commit_status"):
            rule["status"] = 500
        elif kind == "hang":
            rule["seconds"] = config.hang_seconds
        elif kind == "trickle":
            rule["interval"] = config.crm_read_timeout / 2
        rules.append(rule)
    return rules


@dataclass(frozen=True)
class Emission:
    """The events of one run, as waves of PutEvents batches (≤ 10 details each)."""

    details: list[dict[str, Any]]
    waves: list[list[list[dict[str, Any]]]]
    duplicates: int
    concurrent: int


def plan_emissions(config: ChaosConfig) -> Emission:
    details = conversations(config.conversations, seed=config.seed, duplicates=0.0)
    rng = random.Random(config.seed)
    twice = rng.sample(range(len(details)), round(len(details) * config.duplicate_share))
    concurrent = set(twice[: round(len(twice) * config.concurrent_share)])
    later = [index for index in twice if index not in concurrent]
    per_wave = config.wave_conversations
    waves: list[list[dict[str, Any]]] = []
    for start in range(0, len(details), per_wave):
        wave: list[dict[str, Any]] = []
        for index in range(start, min(start + per_wave, len(details))):
            wave.append(details[index])
            if index in concurrent:
                wave.append(dict(details[index]))  # same batch as the original: the copies race
        waves.append(wave)
    for index in later:  # a later wave (or the last one) re-emits it
        wave_of = index // per_wave
        target = min(len(waves) - 1, wave_of + 1 + rng.randrange(2))
        waves[target].insert(rng.randrange(len(waves[target]) + 1), dict(details[index]))
    batched = [[wave[i : i + 10] for i in range(0, len(wave), 10)] for wave in waves]
    return Emission(details, batched, len(twice), len(concurrent))


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
    match = _MARKER.search(text)
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


def _subscribe_to_notifications(stack: LocalStack) -> str:
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


def _count_requests(stack: LocalStack, report: ChaosReport, faults_cleared_at: float) -> None:
    requests = stack.crm.requests
    kinds: Counter[str] = Counter(r.fault for r in requests if r.fault and r.fault != "latency")
    kinds["unauthorized"] = sum(1 for r in requests if r.status == 401)
    report.crm_requests = len(requests)
    report.crm_requests_under_faults = sum(1 for r in requests if r.received < faults_cleared_at)
    report.faults_injected = dict(sorted(kinds.items()))


def _emit(stack: LocalStack, batch: Sequence[Mapping[str, Any]]) -> list[str]:
    """Put one batch on the bus as ``aftercall emit`` does; returns the conversation ids accepted."""
    entries = prepare(
        [RawItem(f"chaos:{d['conversation_id']}", dict(d)) for d in batch],
        bus=stack.outputs["EventBusName"],
        source=stack.outputs["EventSource"],
        environment=stack.outputs["Stage"],
    )
    outcomes, _ = put_batch(stack.client("events"), [entry.entry for entry in entries])
    accepted = []
    for entry, outcome in zip(entries, outcomes, strict=True):
        if not outcome.accepted:
            raise RuntimeError(f"PutEvents refused {entry.conversation_id}: {outcome.error_code}")
        accepted.append(str(entry.conversation_id))
    return accepted


def _wait_for_room(stack: LocalStack, limit: float = 120.0) -> None:
    """Until the delivery queue holds fewer events than there are workers (bounded)."""
    sqs = stack.client("sqs")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        attributes = sqs.get_queue_attributes(
            QueueUrl=stack.delivery_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        if int(attributes["ApproximateNumberOfMessages"]) < stack.workers:
            return
        time.sleep(0.2)


def _rotate_secret(stack: LocalStack, token: str) -> None:
    secrets = stack.client("secretsmanager")
    secret_id = stack.outputs["CrmSecretArn"]
    value = json.loads(secrets.get_secret_value(SecretId=secret_id)["SecretString"])
    secrets.put_secret_value(SecretId=secret_id, SecretString=json.dumps({**value, "access_token": token}))


def replay_once(stack: LocalStack) -> dict[str, Any]:
    """One ``aftercall replay`` pass (invoke mode), run as an operator would run the CLI."""
    result = subprocess.run(
        [sys.executable, "-m", "aftercall_ops.cli", "replay", "--mode", "invoke", "--json"],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    try:
        answer: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        return {"exit_code": result.returncode, "error": (result.stderr or result.stdout)[-2000:]}
    failed = [
        {"conversation_id": m.get("conversation_id"), "action": m.get("action"), "detail": m.get("detail")}
        for m in answer.get("messages") or []
        if m.get("action") not in ("replayed", "skipped")
    ]
    return {
        "exit_code": result.returncode,
        "summary": answer.get("summary"),
        "seconds": answer.get("seconds"),
        "not_replayed": failed,
    }


# --- the run -------------------------------------------------------------------------------------


def run(config: ChaosConfig, progress: Callable[[str], None] | None = None) -> ChaosReport:
    """Run the chaos scenario on a fresh local stack and report what happened (see the module doc)."""
    config.check()
    say = progress or (lambda _: None)
    serialise_sqs_deletes()  # moto runs in this process; see aftercall_ops/moto_fixes.py
    plan = plan_emissions(config)
    report = ChaosReport(
        config,
        conversations=len(plan.details),
        events_emitted=sum(len(batch) for wave in plan.waves for batch in wave),
        duplicate_emissions=plan.duplicates,
        concurrent_duplicate_emissions=plan.concurrent,
    )
    started = time.monotonic()
    stack = LocalStack(
        f"chaos-{os.getpid()}",
        function_timeout=config.function_timeout,
        workers=config.workers,
        retry_delays=config.retry_delays,
        end_handler_environment={"CRM_READ_TIMEOUT_SECONDS": f"{config.crm_read_timeout:g}"},
        crm_seed=config.seed,
    )
    with stack:
        notifications_url = _subscribe_to_notifications(stack)
        say(
            f"local stack up: {stack.workers} workers, timeout {config.function_timeout:g} s, "
            f"CRM read timeout {config.crm_read_timeout:g} s; {report.conversations} conversations, "
            f"{report.events_emitted} events in {len(plan.waves)} waves"
        )
        stack.crm.add_faults(fault_rules(config))
        emitted: set[str] = set()
        new_token = f"rotated-{config.seed}"
        rotation: list[threading.Timer] = []
        rotation_errors: list[str] = []

        def store_new_token() -> None:
            try:
                _rotate_secret(stack, new_token)
                say(f"secret updated with the new token, {config.rotation_gap:g} s after the rotation")
            except Exception as exc:  # noqa: BLE001 - reported with the run's problems
                rotation_errors.append(f"could not update the secret: {exc}")

        rotate_after = max(1, round(len(plan.waves) * config.rotate_at))
        checkpoint_every = max(1, len(plan.waves) // (config.checkpoints + 1))
        for number, wave in enumerate(plan.waves, start=1):
            _wait_for_room(stack)
            for batch in wave:
                emitted.update(_emit(stack, batch))
            if number == rotate_after:
                stack.crm.rotate_token(new_token)  # the old token now gets 401
                say(f"wave {number}: CRM token rotated; the secret follows in {config.rotation_gap:g} s")
                rotation.append(threading.Timer(config.rotation_gap, store_new_token))
                rotation[0].start()
            if number % checkpoint_every == 0 and number < len(plan.waves):
                sample = checkpoint(stack, emitted, f"after wave {number}", started)
                report.checkpoints.append(sample)
                say(_describe(sample))
        for timer in rotation:
            timer.join()
        report.problems.extend(rotation_errors)
        _wait_for_room(stack)  # the last wave meets the faults too
        stack.crm.clear_faults()
        faults_cleared_at = time.monotonic()
        say("CRM recovered (faults cleared); waiting for the stack to be idle")
        stack.wait_idle(timeout=config.idle_timeout)
        sample = checkpoint(stack, emitted, "idle, before replay", started)
        report.checkpoints.append(sample)
        say(_describe(sample))
        _, report.dlq_before_replay = dlq_conversations(stack)
        report.replay = replay_once(stack)
        stack.wait_idle(timeout=config.idle_timeout)
        say(f"replay: {report.replay}")
        sample = checkpoint(stack, emitted, "after replay", started)
        report.checkpoints.append(sample)
        say(_describe(sample))
        report.dlq_after_replay = sum(queue_depth(stack.client("sqs"), stack.outputs["FailedEventsQueueUrl"]))
        report.in_flight_after_replay = len(stack.in_flight())
        processed = processed_conversations(stack)
        report.unprocessed = sorted({str(d["conversation_id"]) for d in plan.details} - processed)
        verify_effects(stack, plan.details, notifications_url, report)
        _count_requests(stack, report, faults_cleared_at)
        report.dispatcher = {**stack.counts(), "workers": stack.workers}
    report.seconds = time.monotonic() - started
    return report


def _describe(sample: Checkpoint) -> str:
    return (
        f"checkpoint {sample.label} at {sample.at_seconds:.0f} s: emitted {sample.emitted} = processed "
        f"{sample.processed} | failed-events queue {sample.in_dlq} | in flight {sample.in_flight}; "
        f"missing {len(sample.missing)}"
    )
