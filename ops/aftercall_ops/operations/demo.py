"""``make demo`` (``aftercall demo``): the whole pipeline on this machine, told as a story, with no AWS account.

1. The sample events in ``events/`` go through bus → rule → dispatcher → the real EndHandler:
   a summary note, a ticket, a disposition in the (fake) CRM, and the invalid event's error
   waiting in the failed-events queue.
2. A day of calls with duplicates; the CRM goes down for a while, so some conversations land in
   the failed-events queue after Lambda's retries; the CRM comes back; ``aftercall replay``; and
   a check that every conversation was processed exactly once (notes, tickets, dispositions,
   follow-ups, notifications) and the queue is empty.
3. One signed webhook from each agent platform (Vapi, Retell, ElevenLabs, a generic sender) posted
   to the ingest function URL, and one Amazon Connect contact event: ingest → bus → EndHandler.

The commands a user would type (``aftercall emit/status/replay``) run as real subprocesses
against the local stack, with the environment ``aftercall local`` would print.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from aftercall import aws
from aftercall.crm.base import DISPOSITIONS
from aftercall.crm.hubspot import marker
from aftercall.follow_ups.schedule import schedule_name
from aftercall.ledger import ActionLedger
from aftercall.observability import logger
from aftercall.phones import normalise_phone
from aftercall_ops.emulator.stack import LocalStack
from aftercall_ops.emulator.template import PROJECT_ROOT
from aftercall_ops.generate import CUSTOMERS, conversations
from aftercall_ops.operations.vendor_import import ingest_demo_webhooks, load_sample, personalise, signed_request


def _load_end_function_module() -> ModuleType:
    """The user's End function module (functions/end_handler/end_function.py), as Lambda loads it."""
    path = PROJECT_ROOT / "functions" / "end_handler" / "end_function.py"
    spec = importlib.util.spec_from_file_location("end_function", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: What the default End function treats as a hot lead (the demo checks each was notified).
HOT_LEADS: tuple[str, ...] = _load_end_function_module().HOT_LEADS
SAMPLES = ("inbound_support_ticket.json", "outbound_sales_disposition.json", "minimal_valid.json")
INVALID_SAMPLE = "invalid_missing_fields.json"
CALLS, SEED, DUPLICATES = 60, 2026, 0.2
#: Locally Lambda's retry waits (1 and 2 minutes in AWS) are shortened to keep the demo short.
RETRY_DELAYS = (0.3, 0.6)


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def aftercall(
    stack: LocalStack, *args: str, check: bool = True, tail: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``aftercall`` CLI as a user would, against the local stack; echo its output
    (only the last ``tail`` lines of it, for the long per-message tables)."""
    print(f"$ aftercall {' '.join(args)}", flush=True)
    result = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "aftercall_ops.cli", *args],
        env={**os.environ, **stack.env, "COLUMNS": "110"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = result.stdout.splitlines(keepends=True)
    if tail is not None and len(lines) > tail:
        print(f"  … ({len(lines) - tail} lines of per-message detail; the summary:)")
        lines = lines[-tail:]
    sys.stdout.write("".join(lines))
    sys.stdout.write(result.stderr)
    if check and result.returncode != 0:
        raise SystemExit(f"demo: `aftercall {' '.join(args)}` exited {result.returncode}")
    return result


def samples(stack: LocalStack) -> None:
    say("1. The sample events: bus → rule → EndHandler → CRM")
    files = [str(PROJECT_ROOT / "events" / name) for name in (*SAMPLES, INVALID_SAMPLE)]
    aftercall(stack, "emit", *files)
    stack.wait_idle(timeout=120)
    for name in SAMPLES:
        detail = json.loads((PROJECT_ROOT / "events" / name).read_text())["detail"]
        conversation_id = detail["conversation_id"]
        notes = stack.crm.notes_for(marker(conversation_id))
        tickets = stack.crm.tickets_for(marker(conversation_id))
        print(f"\n{conversation_id} ({detail['direction']}):")
        for note in notes:
            body = str(note["properties"]["hs_note_body"]).replace("<br>", "\n    ")
            print(f"  note {note['id']}: {_strip_tags(body)}")
        for ticket in tickets:
            props = ticket["properties"]
            print(f"  ticket {ticket['id']}: [{props['hs_ticket_priority']}] {props['subject']}")
        if detail["direction"] == "outbound":
            contact = _contact_with_phone(stack, detail["callee"])
            print(f"  disposition: {detail['state']['disposition']} → lead status {contact['hs_lead_status']}")
        for schedule in _schedules(stack, conversation_id):
            target = json.loads(schedule["Target"]["Input"])
            when = f"{schedule['ScheduleExpression']} {schedule['ScheduleExpressionTimezone']}"
            print(f"  follow-up: {target['kind']} {when} (schedule {schedule['Name']}, deleted after it fires)")
    say("The invalid sample was refused with a reason, and kept in the failed-events queue")
    aftercall(stack, "status")
    stack.client("sqs").purge_queue(QueueUrl=stack.outputs["FailedEventsQueueUrl"])
    print("(it stays there until its producer is fixed; the demo clears the queue for part 2)")


def outage_and_replay(stack: LocalStack, calls: int = CALLS) -> bool:
    say(f"2. A day of calls: {calls} conversations, {DUPLICATES:.0%} of them emitted twice")
    half = calls // 2
    details = conversations(calls, seed=SEED, duplicates=DUPLICATES, environment="sandbox")
    _emit_details(stack, details[:half], "morning")
    stack.wait_idle(timeout=120)
    say("The CRM goes down (every request answers 503) while the afternoon's calls end")
    stack.crm.add_fault(kind="status", status=503)
    _emit_details(stack, details[half:], "afternoon")
    stack.wait_idle(timeout=120)
    _dispatcher_summary(stack)
    aftercall(stack, "status", tail=12)
    say("The CRM is back. Replay the failed events (dry run first, then for real)")
    stack.crm.clear_faults()
    aftercall(stack, "replay", "--dry-run", "--limit", "5")
    aftercall(stack, "replay", "--mode", "invoke", tail=3)
    stack.wait_idle(timeout=120)
    say("Check: every conversation processed exactly once")
    return _verify(stack, details)


def _dispatcher_summary(stack: LocalStack) -> None:
    counts = stack.counts()
    print(
        f"dispatcher (Lambda's async semantics): {counts['invocations']} invocations, "
        f"{counts['failed_attempts']} failed attempts retried or given up, "
        f"{counts['sent_to_dlq']} events sent to the failed-events queue after {stack.max_retries} retries"
    )


def _emit_details(stack: LocalStack, details: Sequence[dict[str, Any]], label: str) -> None:
    path = stack.state_dir / f"{label}.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in details))
    aftercall(stack, "emit", str(path))


def _verify(stack: LocalStack, details: Sequence[dict[str, Any]]) -> bool:
    unique = {d["conversation_id"]: d for d in details}
    ledger = ActionLedger(stack.outputs["IdempotencyTableName"], 3600, client=stack.client("dynamodb"))
    problems: list[str] = []
    notes = tickets = dispositions = follow_ups = notifications = 0
    for conversation_id, detail in unique.items():
        token = marker(conversation_id)
        got_notes = len(stack.crm.notes_for(token))
        got_tickets = len(stack.crm.tickets_for(token))
        want_tickets = 1 if detail["state"].get("support_needed") else 0
        notes, tickets = notes + got_notes, tickets + got_tickets
        if got_notes != 1:
            problems.append(f"{conversation_id}: {got_notes} notes (want 1)")
        if got_tickets != want_tickets:
            problems.append(f"{conversation_id}: {got_tickets} tickets (want {want_tickets})")
        if detail["direction"] == "outbound":
            record = ledger.lookup(conversation_id, "disposition")
            if record and record.get("status") == "COMPLETED":
                dispositions += 1
                assert detail["state"]["disposition"] in DISPOSITIONS
            else:
                problems.append(f"{conversation_id}: disposition not recorded")
        want_follow_ups = _expected_follow_ups(detail)
        got_follow_ups = sorted(json.loads(s["Target"]["Input"])["kind"] for s in _schedules(stack, conversation_id))
        follow_ups += len(got_follow_ups)
        if got_follow_ups != want_follow_ups:
            problems.append(f"{conversation_id}: follow-ups {got_follow_ups} (want {want_follow_ups})")
        if detail["direction"] == "outbound" and detail["state"].get("disposition") in HOT_LEADS:
            record = ledger.lookup(conversation_id, "notification:team")
            if record and record.get("status") == "COMPLETED":
                notifications += 1
            else:
                problems.append(f"{conversation_id}: hot lead not notified")
    depth = _queue_depth(stack)
    emitted = len(details)
    print(f"emitted {emitted} events for {len(unique)} conversations ({emitted - len(unique)} duplicates)")
    print(f"CRM: {notes} notes, {tickets} tickets, {dispositions} dispositions")
    print(f"follow-ups scheduled: {follow_ups}; team notifications: {notifications}; failed-events queue: {depth}")
    if depth:
        problems.append(f"{depth} message(s) still in the failed-events queue")
    for problem in problems:
        print(f"  PROBLEM {problem}")
    if not problems:
        print("\033[1mexactly once: 0 conversations lost, 0 duplicated, failed-events queue empty\033[0m")
    return not problems


def _expected_follow_ups(detail: dict[str, Any]) -> list[str]:
    """What the default End function schedules for this conversation."""
    kinds = []
    if detail["state"].get("follow_up_required") and (detail["caller"] if detail["direction"] == "inbound" else None):
        kinds.append("callback")
    outbound = detail["direction"] == "outbound"
    if outbound and detail["state"].get("disposition") == "info_requested" and detail.get("customer_email"):
        kinds.append("email")
    return sorted(kinds)


def _schedules(stack: LocalStack, conversation_id: str) -> list[dict[str, Any]]:
    """The follow-up schedules of one conversation, read back from EventBridge Scheduler."""
    scheduler = stack.client("scheduler")
    group = stack.outputs["FollowUpScheduleGroupName"]
    found = []
    for kind in ("sms", "email", "callback"):
        try:
            found.append(scheduler.get_schedule(GroupName=group, Name=schedule_name(conversation_id, kind)))
        except scheduler.exceptions.ResourceNotFoundException:
            continue
    return found


def webhooks(stack: LocalStack) -> bool:
    say("3. Agent platforms: one signed webhook each to the ingest URL, and an Amazon Connect event")
    secrets = {name: f"demo-{name}-signing-secret" for name in ("vapi", "retell", "elevenlabs", "generic")}
    stack.client("secretsmanager").put_secret_value(
        SecretId=stack.outputs["IngestSecretArn"], SecretString=json.dumps(secrets)
    )
    url = stack.outputs["IngestUrl"].rstrip("/")
    customer = CUSTOMERS[5].phone
    conversation_ids: dict[str, str] = {}
    for platform in ("vapi", "retell", "elevenlabs", "generic"):
        payload = personalise(platform, load_sample(platform), uuid.uuid4().hex[:8], customer)
        body = json.dumps(payload).encode()
        signed = signed_request(platform, body, secrets[platform])
        request = urllib.request.Request(f"{url}{signed.path}", data=body, method="POST", headers=dict(signed.headers))  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the local function URL (http)
            answer = json.loads(response.read())
            conversation_ids[platform] = str(answer["conversation_id"])
            print(
                f"POST {signed.path} (signed) → {response.status} {answer.get('status')}: {conversation_ids[platform]}"
            )
    os.environ.update(stack.env)  # the Connect path runs the ingest service in this process
    aws.reset_clients()
    logger.setLevel("WARNING")  # its JSON logs would interleave with the story
    (connect,) = ingest_demo_webhooks(
        stack.outputs["EventBusName"],
        secrets,
        stage=stack.outputs["Stage"],
        source=stack.outputs["EventSource"],
        customer_phone=customer,
        platforms=("connect",),
    )
    print(f"Connect DISCONNECTED event → {connect.status} {connect.response.get('status')}: {connect.conversation_id}")
    if connect.conversation_id:
        conversation_ids["connect"] = connect.conversation_id
    stack.wait_idle(timeout=120)
    ok = True
    for platform, conversation_id in conversation_ids.items():
        notes = len(stack.crm.notes_for(marker(conversation_id)))
        print(f"  {platform:<10} {conversation_id}: {notes} CRM note")
        ok = ok and notes == 1
    return ok and len(conversation_ids) == 5


def _queue_depth(stack: LocalStack) -> int:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.outputs["FailedEventsQueueUrl"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def _contact_with_phone(stack: LocalStack, phone: str) -> dict[str, Any]:
    """The fake HubSpot's contact for ``phone`` (its numbers are stored as people typed them)."""
    for contact in stack.crm.contacts:
        if normalise_phone(contact["properties"].get("phone"), "US") == phone:
            return dict(contact["properties"])
    raise LookupError(f"no contact with phone {phone}")


def _strip_tags(text: str) -> str:
    for tag in ("<p>", "</p>", "<b>", "</b>"):
        text = text.replace(tag, " " if tag == "</p>" else "")
    return text.strip()


def run(calls: int = CALLS) -> bool:
    """Tell the story; True when every check held (``aftercall demo`` exits 0 then, 1 otherwise)."""
    started = time.monotonic()
    state_dir = PROJECT_ROOT / ".local-stack" / "demo"
    state_dir.mkdir(parents=True, exist_ok=True)
    # The dispatcher narrates every failed attempt; the demo summarises them instead.
    logging.getLogger("aftercall_ops.emulator").setLevel(logging.CRITICAL)
    with LocalStack("aftercall-demo", retry_delays=RETRY_DELAYS, state_dir=state_dir) as stack:
        print(f"local stack up: AWS at {stack.env['AWS_ENDPOINT_URL']}, fake CRM at {stack.crm.url}")
        print(f"(the functions' JSON logs: {stack.state_dir})")
        samples(stack)
        ok = outage_and_replay(stack, calls)
        ok = webhooks(stack) and ok
    print(f"\ndemo finished in {time.monotonic() - started:.0f}s")
    return ok
