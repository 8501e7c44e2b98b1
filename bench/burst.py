"""Benchmark: a burst of conversations against a CRM that allows R requests per second.

The whole pipeline runs on the local stack (``aftercall_ops.emulator.stack.LocalStack``, from
``template.yaml``): PutEvents → bus → rule → the dispatcher with Lambda's async semantics (one
worker process per unit of the function's reserved concurrency, retries, ``OnFailure`` into the
failed-events queue) → the real EndHandler and the default End function → the fake HubSpot. Here
moto runs in a child process (``bench/_moto.py``, sped up without changing its answers), so its
work does not share an interpreter with the fake CRM and the dispatcher.

The fake CRM enforces R requests per second (a token bucket holding one second's worth; above it,
429 with ``Retry-After`` in whole seconds, at least 1, like a CRM's window limit). N
conversations in the generator's realistic mix (two thirds inbound support calls, a third of
them with a ticket and some with a callback; a third outbound with a disposition, info e-mails
and hot-lead notifications) are emitted at once, as at the end of an outbound campaign.

Sides, one after another in one run, each on a fresh stack (``--sides``):

* ``capacity``: no rate limit at all, ``--capacity-n`` conversations: the CRM requests per second
  the local stack itself manages on this machine. R must stay well below it, or the figures
  measure the machine and not the pipeline.
* ``baseline``: ``CrmRateLimitPerSecond=0``, the template's default and the pipeline before
  client-side pacing: every request goes as soon as its conversation is ready, a 429 makes that
  one request wait ``Retry-After``. Reserved concurrency is the template's default (5).
* ``paced``: the same with ``CrmRateLimitPerSecond=R``, as docs/performance.md tells a user to
  set it: each environment paces itself to R / reserved concurrency, and a 429 pauses it.

Per side: CRM requests accepted per second over R (counted over the drain window, from the first
CRM request to the last answer; the physical limit is 1.0 plus the bucket's initial second), the
share of 429 answers among all CRM requests, time to drain (first PutEvents to an idle stack),
and an exactly-once check per conversation: every action the default End function plans is
COMPLETED in the ledger, with one note and the expected tickets in the CRM, or else the event is
in the failed-events queue. ``lost`` counts conversations that are neither (must be 0). Events in
the queue are then replayed (``aftercall replay``'s code) and checked again: ``lost_at_end``.

* ``hubspot``: HubSpot's real shape instead of one R-per-second bucket: the fake's defaults, 100
  requests per rolling 10 s (Starter) and 4 searches per second, 429s without ``Retry-After``,
  rate-limit headers, ~2 s search lag; half the conversations with new callers (one or two each),
  numbers in mixed formats; ``CrmRateLimitPerSecond=10`` (the whole Starter budget) and the
  template's search pace. The generic sides above switch HubSpot's own limits off, so that R
  alone binds there.

    python bench/burst.py [--n 2000] [--rate 20] [--json] [--sides capacity,baseline,paced,hubspot]

``--json`` prints one object: the paced side's figures at the top level (``rate_limit``,
``achieved_over_limit``, ``share_429``, ``lost``, ``drain_s``, ...), the hubspot side's under
``hubspot_limits`` (``achieved_over_binding_limit``, ``share_429``, ``lost``, ``duplicates``,
``contacts_created``, ``new_callers``), every side under ``sides``, and the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in ("layers/aftercall", "ops"):
    if str(REPO / _path) not in sys.path:
        sys.path.insert(0, str(REPO / _path))

from _lambda_stack import machine  # noqa: E402 - bench/ helpers, after the paths above
from _moto import MotoProcess  # noqa: E402

from aftercall.ledger import ActionLedger  # noqa: E402
from aftercall_ops import generate  # noqa: E402
from aftercall_ops.emulator.stack import LocalStack  # noqa: E402
from aftercall_ops.operations import emit  # noqa: E402
from aftercall_ops.operations.demo import HOT_LEADS  # noqa: E402
from aftercall_ops.operations.dlq import RECEIVE_ARGS, classify  # noqa: E402
from aftercall_ops.operations.replay import ReplayOptions, replay  # noqa: E402

TARGET_ACHIEVED = 0.8
TARGET_SHARE_429 = 0.05
SIDES = ("capacity", "baseline", "paced", "hubspot")
#: The hubspot side: HubSpot Starter's general budget per second, the search limit, half the callers new.
HUBSPOT_GENERAL_PER_S = 10.0
HUBSPOT_SEARCH_PER_S = 4.0
HUBSPOT_NEW_CALLERS = 0.5
HUBSPOT_TARGET_ACHIEVED = 0.9
HUBSPOT_TARGET_SHARE_429 = 0.01
SEED = 2027
STAGE = "sandbox"
#: The template's default: the figures are for the function as shipped (``--concurrency`` to vary it).
RESERVED_CONCURRENCY = 5
_MARKER = re.compile(r"aftercall-([A-Za-z0-9._:-]+)")


# --- moto in a child process, for the local stack --------------------------------------------------


class _ChildMoto:
    """Stands in for ``ThreadedMotoServer`` while the local stack starts: the server is a child process."""

    def __init__(self, ip_address: str = "127.0.0.1", port: int = 0, verbose: bool = False) -> None:
        self._process = MotoProcess()

    def start(self) -> None:
        self._process.__enter__()

    def get_host_and_port(self) -> tuple[str, int]:
        host, port = self._process.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def stop(self) -> None:
        self._process.__exit__(None, None, None)


class BurstStack(LocalStack):
    """The local stack with moto in a child process; everything else exactly as ``LocalStack``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, moto_server=_ChildMoto, **kwargs)


# --- what the default End function does per conversation ------------------------------------------


def expected_actions(detail: Mapping[str, Any]) -> set[str]:
    """The ledger's action names the default End function (functions/end_handler) plans for ``detail``."""
    state = detail["state"]
    actions = {"crm_summary"}
    if state.get("support_needed"):
        actions.add("support_ticket")
    if state.get("follow_up_required") and detail["direction"] == "inbound":
        actions.add("follow_up:callback")
    if detail["direction"] == "outbound":
        disposition = state.get("disposition", "connected")
        actions.add("disposition")
        if disposition == "info_requested" and detail.get("customer_email"):
            actions.add("follow_up:email")
        if disposition in HOT_LEADS:
            actions.add("notification:team")
    return actions


@dataclass
class Check:
    """Per conversation: done exactly once, parked in the failed-events queue, or neither (lost)."""

    done: int = 0
    parked: int = 0
    lost: int = 0
    duplicated: int = 0
    problems: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "in_failed_events_queue": self.parked,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "problems": list(self.problems[:10]),
        }


def _marked(objects: Sequence[Mapping[str, Any]], prop: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for obj in objects:
        match = _MARKER.search(str(obj["properties"].get(prop, "")))
        if match:
            counts[match[1].rstrip(".")] += 1
    return counts


def check(stack: LocalStack, details: Sequence[Mapping[str, Any]], parked: set[str]) -> Check:
    ledger = ActionLedger(stack.outputs["IdempotencyTableName"], 3600, client=stack.client("dynamodb"))
    notes = _marked(stack.crm.notes, "hs_note_body")
    tickets = _marked(stack.crm.tickets, "content")
    result = Check()
    problems: list[str] = []
    for detail in details:
        conversation_id = str(detail["conversation_id"])
        wanted = expected_actions(detail)
        want_tickets = 1 if "support_ticket" in wanted else 0
        if notes[conversation_id] > 1 or tickets[conversation_id] > want_tickets:
            result.duplicated += 1
            problems.append(f"{conversation_id}: {notes[conversation_id]} notes, {tickets[conversation_id]} tickets")
        if conversation_id in parked:
            result.parked += 1
            continue
        statuses = {action: (ledger.lookup(conversation_id, action) or {}).get("status") for action in wanted}
        complete = all(status == "COMPLETED" for status in statuses.values())
        if complete and notes[conversation_id] == 1 and tickets[conversation_id] == want_tickets:
            result.done += 1
        else:
            result.lost += 1
            missing = sorted(action for action, status in statuses.items() if status != "COMPLETED")
            problems.append(f"{conversation_id}: not done ({', '.join(missing) or 'CRM objects'}) and not parked")
    result.problems = tuple(problems)
    return result


def parked_conversations(stack: LocalStack) -> set[str]:
    """Conversation ids in the failed-events queue (peeked: received, then made visible again)."""
    sqs, url = stack.client("sqs"), stack.failed_events_queue_url
    seen: dict[str, Any] = {}
    for _ in range(1000):  # bounded: each receive brings new messages or ends the loop
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=60, **RECEIVE_ARGS
        ).get("Messages", [])
        fresh = [message for message in batch if message["MessageId"] not in seen]
        seen.update((message["MessageId"], message) for message in batch)
        if not fresh:
            break
    handles = [message["ReceiptHandle"] for message in seen.values()]
    for start in range(0, len(handles), 10):
        sqs.change_message_visibility_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(index), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for index, handle in enumerate(handles[start : start + 10])
            ],
        )
    return {event.conversation_id for event in map(classify, seen.values()) if event.conversation_id}


# --- one side --------------------------------------------------------------------------------------


@contextmanager
def quiet() -> Iterator[None]:
    """The dispatcher narrates every failed attempt; the benchmark counts them instead."""
    local_log = logging.getLogger("aftercall_ops.emulator")
    level = local_log.level
    local_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        local_log.setLevel(level)


def crm_figures(stack: LocalStack, rate: float | None, started: float) -> dict[str, Any]:
    """Requests, 429s and the accepted rate over the drain window, from the fake CRM's request log."""
    log = [r for r in stack.crm.requests if r.status is not None]
    limited = [r for r in log if r.status == 429]
    accepted = [r for r in log if r.status != 429]
    figures: dict[str, Any] = {
        "crm_requests": len(log),
        "accepted": len(accepted),
        "responses_429": len(limited),
        "share_429": round(len(limited) / len(log), 4) if log else 0.0,
        "by_status": dict(sorted(Counter(str(r.status) for r in log).items())),
    }
    if accepted:
        first = min(r.received for r in log)
        last = max(r.answered or r.received for r in accepted)
        window = max(last - first, 1e-9)
        figures["first_crm_request_s"] = round(first - started, 2)
        figures["window_s"] = round(window, 2)
        figures["accepted_per_s"] = round(len(accepted) / window, 2)
        # The middle 80 % of the window: the steady state, without the cold starts and the last few.
        low, high = first + 0.1 * window, first + 0.9 * window
        middle = sum(1 for r in accepted if low <= r.received < high) / (0.8 * window)
        figures["steady_accepted_per_s"] = round(middle, 2)
        if rate:
            figures["achieved_over_limit"] = round(len(accepted) / window / rate, 3)
            figures["steady_over_limit"] = round(middle / rate, 3)
    return figures


def hubspot_figures(stack: LocalStack, details: Sequence[Mapping[str, Any]], started: float) -> dict[str, Any]:
    """The hubspot side: each budget's accepted rate over its limit (the binding one is the higher
    share), and one contact per new caller."""
    log = [r for r in stack.crm.requests if r.status is not None]
    accepted = [r for r in log if r.status != 429]
    searches = [r for r in accepted if r.path.endswith("/search")]
    window = max((max(r.answered or r.received for r in accepted) - min(r.received for r in log)), 1e-9)
    general = len(accepted) / window / HUBSPOT_GENERAL_PER_S
    search = len(searches) / window / HUBSPOT_SEARCH_PER_S
    seeded = len(generate.CUSTOMERS)
    created = [c for c in stack.crm.contacts if int(c["id"]) > 1000 + seeded]
    per_phone = Counter(re.sub(r"\D", "", c["properties"].get("phone", "")) for c in created)
    new_callers = {
        re.sub(r"\D", "", str(d.get("caller") if d["direction"] == "inbound" else d.get("callee")))
        for d in details
        if str(d.get("caller") if d["direction"] == "inbound" else d.get("callee"))
        .replace(" ", "")
        .replace("-", "")
        .startswith(generate.NEW_CALLER_PREFIX)
    }
    return {
        "general_over_limit": round(general, 3),
        "search_over_limit": round(search, 3),
        "achieved_over_binding_limit": round(max(general, search), 3),
        "binding_limit": "general" if general >= search else "search",
        "searches": len(searches),
        "responses_429_search": sum(1 for r in log if r.status == 429 and r.path.endswith("/search")),
        "responses_429_other": sum(1 for r in log if r.status == 429 and not r.path.endswith("/search")),
        "new_callers": len(new_callers),
        "contacts_created": len(created),
        "duplicate_contacts": sum(count - 1 for count in per_phone.values() if count > 1),
        "new_callers_without_contact": len(new_callers - set(per_phone)),
    }


def run_side(side: str, n: int, rate: float, concurrency: int, max_seconds: float) -> dict[str, Any]:
    limited = side != "capacity"
    hubspot = side == "hubspot"
    if hubspot:
        rate = HUBSPOT_GENERAL_PER_S
    parameters = {
        "Stage": STAGE,
        "ReservedConcurrency": str(concurrency),
        "CrmRateLimitPerSecond": f"{rate:g}" if side in ("paced", "hubspot") else "0",
    }
    if hubspot:
        details = [
            emit.RawItem(f"generated #{index + 1}", detail)
            for index, detail in enumerate(
                generate.conversations(n, seed=SEED, environment=STAGE, new_callers=HUBSPOT_NEW_CALLERS)
            )
        ]
    else:
        details = emit.generated(n, seed=SEED, duplicates=0.0, invalid=0.0, environment=STAGE)
    with quiet(), BurstStack(f"aftercall-burst-{side}", parameters) as stack:
        entries = emit.prepare(
            details, bus=stack.outputs["EventBusName"], source=stack.outputs["EventSource"], environment=STAGE
        )
        if not hubspot:
            # One bucket of R per second binds here, not HubSpot's own limits (the hubspot side has those).
            stack.crm.general_limit = None
            stack.crm.search_limit_per_second = None
            stack.crm.set_rate_limit(rate if limited else None)
        events = stack.client("events")
        started = time.monotonic()
        sent = emit.send(events, entries)
        emitted_s = time.monotonic() - started
        if not sent.ok:
            raise RuntimeError(f"{side}: {len(sent.failures)} events were not accepted by the bus")
        stack.wait_idle(timeout=max_seconds)
        drain_s = time.monotonic() - started
        figures = crm_figures(stack, rate if limited else None, started)
        counts = stack.counts()
        durations = sorted(
            float(record["record"]["metrics"]["durationMs"])
            for record in stack.log_records()
            if record.get("type") == "platform.report"
        )
        conversations = [item.value for item in details]
        parked = parked_conversations(stack)
        checked = check(stack, conversations, parked)
        result: dict[str, Any] = {
            "side": side,
            "conversations": n,
            "rate_limit": rate if limited else None,
            "crm_rate_limit_parameter": parameters["CrmRateLimitPerSecond"],
            "reserved_concurrency": stack.workers,
            **figures,
            "drain_s": round(drain_s, 2),
            "emit_s": round(emitted_s, 2),
            "conversations_per_s": round(n / drain_s, 2),
            "crm_requests_per_conversation": round(figures["accepted"] / n, 3),
            "invocations": counts.get("invocations", 0),
            "failed_attempts": counts.get("failed_attempts", 0),
            "sent_to_dlq": counts.get("sent_to_dlq", 0),
            "cold_starts": counts.get("cold_starts", 0),
            # Seconds per conversation, as Lambda would bill them (pacing waits included).
            "invocation_ms_median": round(statistics.median(durations), 1) if durations else None,
            "invocation_ms_p90": round(durations[int(0.9 * (len(durations) - 1))], 1) if durations else None,
            "invocation_s_total": round(sum(durations) / 1000, 1),
            "lost": checked.lost,
            "duplicated": checked.duplicated,
            "after_drain": checked.to_json(),
        }
        if parked:
            # What a user would do next: replay the failed-events queue, then everything is done.
            report = replay(
                stack.client("sqs"),
                stack.failed_events_queue_url,
                ReplayOptions(mode="put-events"),
                events=events,
                bus=stack.outputs["EventBusName"],
            )
            stack.wait_idle(timeout=max_seconds)
            at_end = check(stack, conversations, parked_conversations(stack))
            result["replay"] = report.summary()
            result["at_end"] = at_end.to_json()
            result["lost_at_end"] = at_end.lost + at_end.parked
        else:
            result["lost_at_end"] = checked.lost
        if hubspot:
            result.update(hubspot_figures(stack, conversations, started))
            result["duplicates"] = result["duplicated"] + result["duplicate_contacts"]
            result["meets_target"] = (
                result["achieved_over_binding_limit"] >= HUBSPOT_TARGET_ACHIEVED
                and result["share_429"] < HUBSPOT_TARGET_SHARE_429
                and result["lost_at_end"] == 0
                and result["duplicates"] == 0
                and result["new_callers_without_contact"] == 0
            )
        elif limited:
            result["meets_target"] = (
                result.get("achieved_over_limit", 0.0) >= TARGET_ACHIEVED and result["share_429"] < TARGET_SHARE_429
            )
        return result


# --- output ------------------------------------------------------------------------------------------


def summary(results: dict[str, dict[str, Any]], n: int, rate: float, concurrency: int) -> dict[str, Any]:
    generic = {side: result for side, result in results.items() if side != "hubspot"}
    primary = generic.get("paced") or generic.get("baseline") or next(iter(results.values()))
    keys = (
        "rate_limit",
        "achieved_over_limit",
        "share_429",
        "lost",
        "lost_at_end",
        "drain_s",
        "responses_429",
        "crm_requests",
        "accepted_per_s",
        "steady_over_limit",
        "invocation_ms_median",
        "invocation_s_total",
        "meets_target",
    )
    out: dict[str, Any] = {key: primary.get(key) for key in keys}
    out.update({"side": primary["side"], "conversations": n, "rate_limit": rate})
    if "baseline" in results:
        out["baseline"] = {key: results["baseline"].get(key) for key in keys}
    if "capacity" in results:
        capacity = results["capacity"].get("accepted_per_s") or 0.0
        out["stack_capacity_per_s"] = capacity
        out["rate_over_capacity"] = round(rate / capacity, 3) if capacity else None
    out["target"] = {"achieved_over_limit": TARGET_ACHIEVED, "share_429_below": TARGET_SHARE_429}
    if "hubspot" in results:
        side = results["hubspot"]
        out["hubspot_limits"] = {
            "achieved_over_binding_limit": side["achieved_over_binding_limit"],
            "binding_limit": side["binding_limit"],
            "share_429": side["share_429"],
            "lost": side["lost_at_end"],
            "duplicates": side["duplicates"],
            "contacts_created": side["contacts_created"],
            "new_callers": side["new_callers"],
            "conversations": side["conversations"],
            "target": {
                "achieved_over_binding_limit": HUBSPOT_TARGET_ACHIEVED,
                "share_429_below": HUBSPOT_TARGET_SHARE_429,
                "lost": 0,
                "duplicates": 0,
                "contacts_created": "one per new caller",
            },
            "meets_target": side["meets_target"],
        }
    out["reserved_concurrency"] = concurrency
    out["machine"] = machine()
    out["sides"] = results
    return out


def describe(result: Mapping[str, Any]) -> str:
    achieved = result.get("achieved_over_limit")
    if result["side"] == "hubspot":
        return (
            f" hubspot: {result['achieved_over_binding_limit']:.2f} of the binding limit ({result['binding_limit']}; "
            f"general {result['general_over_limit']:.2f}, search {result['search_over_limit']:.2f}) "
            f"| 429: {result['responses_429']} of {result['crm_requests']} ({result['share_429']:.1%}; "
            f"{result['responses_429_search']} on searches) | drain {result['drain_s']:.1f} s "
            f"| new callers {result['new_callers']}, contacts created "
            f"{result['contacts_created']} | lost {result['lost_at_end']}, duplicates {result['duplicates']}"
        )
    parts = [
        f"{result['side']:>8}:",
        f"{result.get('accepted_per_s', 0):6.2f} accepted CRM requests/s",
        f"({achieved:.2f} of the limit, {result['steady_over_limit']:.2f} in the middle 80 %)"
        if achieved is not None
        else "(no limit)",
        f"| 429: {result['responses_429']} of {result['crm_requests']} ({result['share_429']:.1%})",
        f"| drain {result['drain_s']:.1f} s",
        f"| {result['crm_requests_per_conversation']} requests/conversation",
        f"| invocation median {result['invocation_ms_median']} ms",
        f"| failed attempts {result['failed_attempts']}, to DLQ {result['sent_to_dlq']}",
        f"| lost {result['lost']}, at the end {result['lost_at_end']}, duplicated {result['duplicated']}",
    ]
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=2000, help="conversations in the burst (default 2000)")
    parser.add_argument("--rate", type=float, default=20.0, help="the CRM's limit, requests per second (default 20)")
    parser.add_argument(
        "--capacity-n", type=int, default=500, help="conversations for the unlimited capacity side (default 500)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=RESERVED_CONCURRENCY,
        help=f"the function's ReservedConcurrency (default {RESERVED_CONCURRENCY}, the template's)",
    )
    parser.add_argument(
        "--hubspot-n", type=int, default=600, help="conversations for the HubSpot-shaped side (default 600)"
    )
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of {', '.join(SIDES)}")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="longest wait for one side to drain")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    sides = [side.strip() for side in args.sides.split(",") if side.strip()]
    if not sides or any(side not in SIDES for side in sides):
        parser.error(f"--sides takes a comma-separated list of {', '.join(SIDES)}")
    if not 1 <= args.n <= 20_000 or not 1 <= args.capacity_n <= 20_000:
        parser.error("--n and --capacity-n must be between 1 and 20000")
    if not args.rate > 0:
        parser.error("--rate must be positive")
    if not 1 <= args.concurrency <= 32:
        parser.error("--concurrency must be between 1 and 32 (one process each on this machine)")
    results: dict[str, dict[str, Any]] = {}
    for side in sides:
        n = {"capacity": args.capacity_n, "hubspot": args.hubspot_n}.get(side, args.n)
        results[side] = run_side(side, n, args.rate, args.concurrency, args.max_seconds)
        if not args.json:
            print(describe(results[side]), flush=True)
    out = summary(results, args.n, args.rate, args.concurrency)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    info = out["machine"]
    print(
        f"burst of {args.n} conversations, CRM limit {args.rate:g} requests/s, reserved concurrency "
        f"{args.concurrency}; target >= {TARGET_ACHIEVED:g} of the limit with < {TARGET_SHARE_429:.0%} 429s"
    )
    if "stack_capacity_per_s" in out:
        print(
            f"local stack without a limit: {out['stack_capacity_per_s']} CRM requests/s "
            f"(the limit is {out['rate_over_capacity']} of that)"
        )
    print(
        f"machine: nproc {info['nproc']}, {info['cpu_model']}, Python {info['python']}, "
        f"load average {info['load_average']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
