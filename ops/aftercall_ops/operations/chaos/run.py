"""The chaos run itself: a fresh local stack, the waves, the rotation, recovery, one replay, the count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aftercall_ops.emulator.moto_fixes import serialise_sqs_deletes
from aftercall_ops.emulator.stack import LocalStack
from aftercall_ops.operations.chaos.observe import (
    checkpoint,
    count_requests,
    dlq_conversations,
    processed_conversations,
    subscribe_to_notifications,
    verify_effects,
)
from aftercall_ops.operations.chaos.plan import ChaosConfig, ChaosReport, Checkpoint, fault_rules, plan_emissions
from aftercall_ops.operations.emit import RawItem, prepare, put_batch
from aftercall_ops.operations.replay import queue_depth


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
    serialise_sqs_deletes()  # moto runs in this process; see aftercall_ops/emulator/moto_fixes.py
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
        notifications_url = subscribe_to_notifications(stack)
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
        count_requests(stack, report, faults_cleared_at)
        report.dispatcher = {**stack.counts(), "workers": stack.workers}
    report.seconds = time.monotonic() - started
    return report


def _describe(sample: Checkpoint) -> str:
    return (
        f"checkpoint {sample.label} at {sample.at_seconds:.0f} s: emitted {sample.emitted} = processed "
        f"{sample.processed} | failed-events queue {sample.in_dlq} | in flight {sample.in_flight}; "
        f"missing {len(sample.missing)}"
    )
