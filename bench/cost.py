"""Benchmark: what a million conversations cost in AWS charges, from counts measured here.

Three warm End function processes (``bench/_lambda_child.py``, the template's environment, tracing
on) run on the local stack (moto server and fake HubSpot on loopback, ``bench/_per_conversation.py``):

* **local**: ``--events`` conversations of the generator's mix (1% malformed, rejected and parked),
  ending at a busy hour's rate (:data:`PEAK_ARRIVALS_PER_S`, ``--arrival-rate``), the CRM answering
  at once. It gives every count per conversation: AWS calls by operation,
  DynamoDB write units priced from the size of the item each write touched, table items and
  their bytes, CRM requests, log bytes, schedules, publishes, parked events; and the warm
  duration, CPU time and start-up (INIT) as measured on this machine;
* **local_burst**: ``--events-burst`` more, all ending at once (the end of a campaign): priced beside
  A, with their own warm duration (paced CRM searches wait for their slots);
* **lambda_200ms**: ``--events-200ms`` more conversations of the same mix with the fake HubSpot
  answering every request after 200 ms, as a real CRM does. Its warm duration, plus its CPU time
  stretched to the CPU share Lambda gives the template's ``MemorySize`` (1,769 MB = one vCPU),
  is the duration of the ``usd_per_million_lambda_200ms`` figure; the INIT phase is stretched the
  same way.

The prices (:data:`PRICES`, with their date and source) apply to those counts; X-Ray is priced at
the template's default sampling (``TraceSamplingRate``), the retention of items and logs at the
template's defaults. Nothing is asserted; the targets are reported as met or missed.

    python bench/cost.py [--json] [--markdown] [--events 600] [--events-200ms 100] [--events-burst 300]
    python bench/cost.py --from-json cost.json --markdown      # regenerate the tables from a saved run
    python bench/cost.py --from-json cost.json --update-doc docs/performance.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _lambda_stack import EVENT_SOURCE, STACK_NAME, STAGE, BenchStack, machine, mixed_events
from _per_conversation import per_conversation, run_warm, table_items

from aftercall_ops.emulator.template import Resolver, function_properties, load_template

MILLION = 1_000_000
TARGET_LOCAL = 4.00
TARGET_LAMBDA_200MS = 5.00
#: Lambda gives a function one vCPU at 1,769 MB and CPU in proportion below that ("Lambda allocates
#: CPU power in proportion to the amount of memory configured", Lambda developer guide, memory).
FULL_CPU_MB = 1769
#: Share of invocations that start a new execution environment ("cold starts typically occur in
#: under 1% of invocations", AWS Lambda developer guide, execution environment lifecycle).
COLD_START_SHARE = 0.01
#: Requests an event in the failed-events queue costs: the send, a receive and a delete by replay.
SQS_REQUESTS_PER_PARKED_EVENT = 3
#: One execution environment kept warm all month re-reads the CRM secret once per cache period.
MONTH_SECONDS = 30 * 24 * 3600
CRM_LATENCY_MS = 200.0
#: When the priced conversations end: a million a month is 0.39 per second on average; teams take
#: most calls in business hours (22 days of 10 hours: 1.26 per second) and the busiest hour about
#: twice that. The local and 200 ms runs arrive at this peak rate (Poisson), not all at once: a burst
#: makes every conversation wait for CRM search slots (HubSpot's 4/s, paced) that a real month's
#: spread-out arrivals mostly do not. The burst is measured and priced beside it ("A, burst").
PEAK_ARRIVALS_PER_S = 2.5


@dataclass(frozen=True)
class Price:
    key: str
    service: str
    usd: float
    unit: str


#: US East (N. Virginia) list prices, without free tiers, savings plans or volume tiers.
PRICES_AS_OF = "2026-11-25"
PRICES_SOURCE = (
    "aws.amazon.com/<service>/pricing (Lambda, EventBridge, DynamoDB, SQS, Secrets Manager, EventBridge "
    "Scheduler, SNS, CloudWatch, X-Ray), as published copies dated March-June 2026 where AWS renders the "
    "rate table in the browser; INIT billing: AWS Compute blog, 'AWS Lambda standardizes billing for INIT "
    "Phase' (billed as duration since 2025-08-01)"
)
PRICES = (
    Price("lambda_request", "Lambda requests", 0.20 / MILLION, "per request ($0.20 per 1M)"),
    Price("lambda_gb_second", "Lambda duration, arm64", 0.0000133334, "per GB-second (first 7.5 billion GB-s)"),
    Price("eventbridge_event", "EventBridge custom events", 1.00 / MILLION, "per 64 KB chunk put ($1.00 per 1M)"),
    Price("dynamodb_write_unit", "DynamoDB on-demand writes", 0.625 / MILLION, "per write request unit"),
    Price("dynamodb_read_unit", "DynamoDB on-demand reads", 0.125 / MILLION, "per read request unit"),
    Price("dynamodb_gb_month", "DynamoDB storage", 0.25, "per GB-month"),
    Price("sqs_request", "SQS standard", 0.40 / MILLION, "per request (64 KB chunk)"),
    Price("secrets_call", "Secrets Manager API calls", 0.05 / 10_000, "per call ($0.05 per 10,000)"),
    Price("scheduler_invocation", "EventBridge Scheduler", 1.00 / MILLION, "per invocation"),
    Price("sns_publish", "SNS standard publishes", 0.50 / MILLION, "per publish (deliveries extra)"),
    Price("logs_gb_ingested", "CloudWatch Logs ingestion", 0.50, "per GB"),
    Price("logs_gb_month", "CloudWatch Logs storage", 0.03, "per GB-month"),
    Price("xray_trace", "X-Ray traces recorded", 5.00 / MILLION, "per trace"),
)
PRICE = {price.key: price.usd for price in PRICES}
#: Where ``--update-doc`` puts the ``--markdown`` block.
DOC_MARKERS = ("<!-- bench/cost.py --markdown: begin -->", "<!-- bench/cost.py --markdown: end -->")


def template_defaults() -> dict[str, float]:
    """What the template sets by default: memory, sampling, log and item retention, secret cache."""
    template = load_template()
    resolver = Resolver(template, {"Stage": STAGE, "EventSource": EVENT_SOURCE}, STACK_NAME)
    function = function_properties(template, "EndHandler")
    variables = function["Environment"]["Variables"]
    return {
        "memory_mb": float(resolver.value(function["MemorySize"])),
        "trace_sampling_rate": float(template["Parameters"]["TraceSamplingRate"]["Default"]),
        "trace_reservoir_per_second": float(
            template["Resources"]["EndHandlerSamplingRule"]["Properties"]["SamplingRule"]["ReservoirSize"]
        ),
        "log_retention_days": float(template["Parameters"]["LogRetentionDays"]["Default"]),
        "item_retention_days": int(variables["IDEMPOTENCY_RETENTION_SECONDS"]) / 86400,
        "secret_max_age_s": float(variables["CRM_SECRET_MAX_AGE"]),
    }


def mean(values: Sequence[float]) -> float:
    return sum(values) / max(1, len(values))


def measure(
    events: int, events_200ms: int, events_burst: int, seed: int, sampled_share: float, arrival_rate: float
) -> dict[str, Any]:
    """The three runs on one stack; the counts from the first, the durations from all three.

    X-Ray samples ``sampled_share`` of the invocations (the template's rate): an unsampled one
    records no segments, which is most of the tracer's CPU time. The conversations of the local and
    200 ms runs end at ``arrival_rate`` per second; the burst run's all at once.
    """
    with BenchStack() as stack:
        local = run_warm(stack, events, seed=seed, sampled_share=sampled_share, arrival_rate=arrival_rate)
        crm = stack.crm_requests()
        sizes = table_items(stack)
        burst = run_warm(stack, events_burst, seed=seed + 2, sampled_share=sampled_share) if events_burst else None
        stack.crm.add_fault("latency", ms=CRM_LATENCY_MS)
        slow = run_warm(stack, events_200ms, seed=seed + 1, sampled_share=sampled_share, arrival_rate=arrival_rate)
    counts = per_conversation(local, crm, sizes)
    event_bytes = [len(json.dumps(event).encode()) for event in mixed_events(events, seed=seed)]

    def durations(report: Mapping[str, Any]) -> dict[str, float]:
        warm, cpu = report["durations_ms"][1:], report["cpu_ms"][1:]
        return {
            "warm_ms_mean": round(mean(warm), 2),
            "warm_billed_ms_mean": round(mean([math.ceil(d) for d in warm]), 2),
            "warm_cpu_ms_mean": round(mean(cpu), 2),
            "init_ms": round(report["startup_ms"] + report["import_ms"], 2),
            "init_cpu_ms": round(report["import_cpu_ms"], 2),
            "statuses": report["statuses"],
        }

    return {
        "events": events,
        "events_200ms": events_200ms,
        "events_burst": events_burst,
        "arrival_rate_per_s": arrival_rate,
        "per_conversation": counts,
        "event_chunks_64kb": round(mean([max(1, math.ceil(b / 65536)) for b in event_bytes]), 3),
        "local": durations(local.report),
        **({"local_burst": durations(burst.report)} if burst else {}),
        "lambda_200ms": durations(slow.report),
    }


def price(measured: Mapping[str, Any], defaults: Mapping[str, float]) -> dict[str, Any]:
    """Per-million items for both scenarios from the measured counts and :data:`PRICES`."""
    per = measured["per_conversation"]
    calls = per["aws_calls"]
    memory_gb = defaults["memory_mb"] / 1024
    stretch = FULL_CPU_MB / defaults["memory_mb"]
    local, slow = measured["local"], measured["lambda_200ms"]
    # Duration and INIT per scenario (seconds): as measured here, or on Lambda's CPU share with a 200 ms CRM.
    warm_s = {
        "local": local["warm_billed_ms_mean"] / 1000,
        "lambda_200ms": (slow["warm_ms_mean"] + slow["warm_cpu_ms_mean"] * (stretch - 1)) / 1000,
    }
    init_s = {"local": local["init_ms"] / 1000, "lambda_200ms": local["init_cpu_ms"] * stretch / 1000}
    if "local_burst" in measured:  # the same conversations all ending at once (paced CRM searches wait)
        warm_s["local_burst"] = measured["local_burst"]["warm_billed_ms_mean"] / 1000
        init_s["local_burst"] = init_s["local"]
    n = MILLION
    invocations = 1 + per.get("retries", 0)
    secret_calls = MONTH_SECONDS / defaults["secret_max_age_s"] + n * COLD_START_SHARE
    item_gb_months = (
        n
        * per["table_items"]
        * (per["table_item_bytes_mean"] + 100)  # DynamoDB adds 100 bytes of index overhead per item
        * defaults["item_retention_days"]
        / 30
        / 1e9
    )
    log_gb = n * per["log_bytes"] / 1e9
    log_months = defaults["log_retention_days"] / 30
    parked = calls.get("sqs.SendMessage", 0.0)
    reads = per.get("dynamodb_read_units", calls.get("dynamodb.GetItem", 0.0))
    shared: list[tuple[str, str, float]] = [
        ("Lambda requests", f"{n * invocations / MILLION:g}M", n * invocations * PRICE["lambda_request"]),
        (
            "EventBridge custom events",
            f"{n * measured['event_chunks_64kb'] / MILLION:g}M",
            n * measured["event_chunks_64kb"] * PRICE["eventbridge_event"],
        ),
        (
            "DynamoDB writes",
            f"{per['dynamodb_write_units']:g}M write units",
            n * per["dynamodb_write_units"] * PRICE["dynamodb_write_unit"],
        ),
        ("DynamoDB reads", f"{reads:g}M read units", n * reads * PRICE["dynamodb_read_unit"]),
        (
            "DynamoDB storage",
            f"{item_gb_months:.2f} GB-month ({per['table_items']:g} items of {per['table_item_bytes_mean']:.0f} B, "
            f"{defaults['item_retention_days']:g} days)",
            item_gb_months * PRICE["dynamodb_gb_month"],
        ),
        (
            "SQS (parked events)",
            f"{n * parked * SQS_REQUESTS_PER_PARKED_EVENT:,.0f} requests",
            n * parked * SQS_REQUESTS_PER_PARKED_EVENT * PRICE["sqs_request"],
        ),
        (
            "Secrets Manager calls",
            f"{secret_calls:,.0f} (one environment warm all month + cold starts)",
            secret_calls * PRICE["secrets_call"],
        ),
        (
            "EventBridge Scheduler",
            f"{n * calls.get('scheduler.CreateSchedule', 0.0):,.0f} follow-ups fired",
            n * calls.get("scheduler.CreateSchedule", 0.0) * PRICE["scheduler_invocation"],
        ),
        (
            "SNS publishes",
            f"{n * calls.get('sns.Publish', 0.0):,.0f}",
            n * calls.get("sns.Publish", 0.0) * PRICE["sns_publish"],
        ),
        (
            "CloudWatch Logs",
            f"{log_gb:.2f} GB ({per['log_bytes']:.0f} B per conversation), "
            f"kept {defaults['log_retention_days']:g} days",
            log_gb * (PRICE["logs_gb_ingested"] + PRICE["logs_gb_month"] * log_months),
        ),
        (
            "X-Ray traces",
            f"{defaults['trace_sampling_rate']:.0%} of 1M sampled",
            n * defaults["trace_sampling_rate"] * PRICE["xray_trace"],
        ),
    ]
    items: list[dict[str, Any]] = []
    totals = dict.fromkeys(warm_s, 0.0)
    for scenario in warm_s:
        gb_s = n * memory_gb * warm_s[scenario]
        init_gb_s = n * COLD_START_SHARE * memory_gb * init_s[scenario]
        rows = [
            (
                "Lambda duration (warm)",
                f"{gb_s:,.0f} GB-s (D = {warm_s[scenario] * 1000:.0f} ms)",
                gb_s * PRICE["lambda_gb_second"],
            ),
            (
                "Lambda INIT (cold starts)",
                f"{init_gb_s:,.0f} GB-s (I = {init_s[scenario] * 1000:.0f} ms)",
                init_gb_s * PRICE["lambda_gb_second"],
            ),
            *shared,
        ]
        for name, quantity, usd in rows:
            row = next((r for r in items if r["item"] == name), None)
            if row is None:
                row = {"item": name}
                items.append(row)
            row[f"quantity_{scenario}"] = quantity
            row[f"usd_{scenario}"] = round(usd, 4)
            totals[scenario] += usd
    return {
        "usd_per_million_local": round(totals["local"], 2),
        "usd_per_million_lambda_200ms": round(totals["lambda_200ms"], 2),
        **({"usd_per_million_local_burst": round(totals["local_burst"], 2)} if "local_burst" in totals else {}),
        "items": items,
        "durations_s": {"warm": warm_s, "init": init_s},
    }


def result(measured: Mapping[str, Any], memory_sizes: Sequence[int] = ()) -> dict[str, Any]:
    defaults = template_defaults()
    priced = price(measured, defaults)
    other_sizes = {
        str(mb): {
            key: price(measured, {**defaults, "memory_mb": float(mb)})[key]
            for key in ("usd_per_million_local", "usd_per_million_lambda_200ms")
        }
        for mb in memory_sizes
    }
    return {
        "benchmark": "cost",
        **priced,
        "target_local": TARGET_LOCAL,
        "target_lambda_200ms": TARGET_LAMBDA_200MS,
        "target_met": priced["usd_per_million_local"] <= TARGET_LOCAL
        and priced["usd_per_million_lambda_200ms"] <= TARGET_LAMBDA_200MS,
        "at_memory_mb": other_sizes,
        "measured": dict(measured),
        "assumptions": {
            **defaults,
            "cold_start_share": COLD_START_SHARE,
            "full_cpu_mb": FULL_CPU_MB,
            "crm_latency_ms": CRM_LATENCY_MS,
            "sqs_requests_per_parked_event": SQS_REQUESTS_PER_PARKED_EVENT,
        },
        "prices": {"as_of": PRICES_AS_OF, "source": PRICES_SOURCE, **{p.key: p.usd for p in PRICES}},
    }


def markdown(output: Mapping[str, Any]) -> str:
    """The cost section's tables and formula, generated (docs/performance.md embeds this)."""
    a, m = output["assumptions"], output["measured"]
    per = m["per_conversation"]
    calls = ", ".join(f"{op} {n:g}" for op, n in per["aws_calls"].items())
    scenarios = [("local", "A"), ("local_burst", "A, burst"), ("lambda_200ms", "B")]
    scenarios = [(key, label) for key, label in scenarios if f"usd_per_million_{key}" in output]
    burst = m.get("local_burst")
    lines = [
        f"**Prices** (US East, N. Virginia, list prices without free tiers; as of {output['prices']['as_of']}; "
        f"source: {output['prices']['source']}):",
        "",
        "| service | price |",
        "|---|---|",
        *(f"| {p.service} | ${p.usd:.10f}".rstrip("0").rstrip(".") + f" {p.unit} |" for p in PRICES),
        "",
        f"**Per conversation, measured** (bench/cost.py, {m['events']} conversations of the generator's mix, "
        f"{per['log_lines']:g} log lines): AWS calls {calls}; {per['dynamodb_write_units']:g} DynamoDB write units "
        f"(each write priced by its item's size, largest item {per['table_item_bytes_max']} B); "
        f"{per['table_items']:g} table items of {per['table_item_bytes_mean']:.0f} B; "
        f"{per['crm_requests']:g} CRM requests; {per['log_bytes']:.0f} log bytes ({per['emf_lines']:g} EMF lines). "
        f"Arrivals: {m.get('arrival_rate_per_s', 0) or 'all at once'} per second (Poisson) in A and B"
        + (f"; {m['events_burst']} more all at once in A, burst" if burst else "")
        + ". "
        f"Warm invocation here {m['local']['warm_ms_mean']:g} ms ({m['local']['warm_cpu_ms_mean']:g} ms CPU)"
        + (f", in the burst {burst['warm_ms_mean']:g} ms ({burst['warm_cpu_ms_mean']:g} ms CPU)" if burst else "")
        + "; "
        f"with the CRM at {a['crm_latency_ms']:g} ms ({m['events_200ms']} conversations) "
        f"{m['lambda_200ms']['warm_ms_mean']:g} ms ({m['lambda_200ms']['warm_cpu_ms_mean']:g} ms CPU); "
        f"start-up and import {m['local']['init_ms']:g} ms ({m['local']['init_cpu_ms']:g} ms CPU).",
        "",
        "**Formula**, for N conversations, memory M (GB), warm duration D (s), cold-start share p, INIT I (s):",
        "",
        "```text",
        "Lambda requests   = N * $0.20/1M",
        "Lambda duration   = N * M * D * $0.0000133334        D on Lambda = D here + CPU * (1,769 MB / memory - 1)",
        "Lambda INIT       = N * p * M * I * $0.0000133334    I on Lambda = import CPU * 1,769 MB / memory",
        "EventBridge       = N * ceil(event KB / 64) * $1.00/1M",
        "DynamoDB writes   = N * Σ writes * ceil(item KB) * $0.625/1M",
        "DynamoDB storage  = N * items * (item bytes + 100) * retention days / 30 / 1e9 * $0.25",
        "SQS               = N * parked events * 3 requests * $0.40/1M",
        "Secrets Manager   = (seconds warm / cache seconds + N * p) * $0.05/10,000",
        "Scheduler         = N * follow-ups * $1.00/1M",
        "SNS               = N * notifications * $0.50/1M",
        "CloudWatch Logs   = N * log bytes / 1e9 * ($0.50 + $0.03 * months kept)",
        "X-Ray             = N * TraceSamplingRate * $5.00/1M",
        "```",
        "",
        f"**Per million conversations** at the template's defaults: MemorySize {a['memory_mb']:g} MB, "
        f"TraceSamplingRate {a['trace_sampling_rate']:g} (reservoir {a['trace_reservoir_per_second']:g}/s), "
        f"logs kept {a['log_retention_days']:g} days, items {a['item_retention_days']:g} days, "
        f"p = {a['cold_start_share']:.0%}. **A**: durations as measured here; **B**: on Lambda with a CRM "
        f"answering in {a['crm_latency_ms']:g} ms"
        + ("; **A, burst**: A's conversations all ending at once." if burst else "."),
        "",
        "| item | "
        + " | ".join(f"quantity ({label})" for _, label in scenarios)
        + " | "
        + " | ".join(label for _, label in scenarios)
        + " |",
        "|---|" + "---|" * (2 * len(scenarios)),
    ]
    for row in output["items"]:
        lines.append(
            f"| {row['item']} | "
            + " | ".join(str(row[f"quantity_{key}"]) for key, _ in scenarios)
            + " | "
            + " | ".join(f"${row[f'usd_{key}']:.2f}" for key, _ in scenarios)
            + " |"
        )
    lines.append(
        "| **total** |"
        + " |" * len(scenarios)
        + " "
        + " | ".join(f"**${output[f'usd_per_million_{key}']:.2f}**" for key, _ in scenarios)
        + " |"
    )
    lines.append("")
    others = "; ".join(
        f"at {mb} MB: A ${f['usd_per_million_local']:.2f}, B ${f['usd_per_million_lambda_200ms']:.2f}"
        for mb, f in output.get("at_memory_mb", {}).items()
    )
    lines.append(
        f"Targets: A ≤ ${output['target_local']:.2f}, B ≤ ${output['target_lambda_200ms']:.2f}: "
        + ("**met**." if output["target_met"] else "**missed**.")
        + (f" The same counts at other memory sizes: {others}." if others else "")
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=600, help="conversations of the local run")
    parser.add_argument("--events-burst", type=int, default=300, help="conversations ending at once (0: none)")
    parser.add_argument(
        "--arrival-rate", type=float, default=PEAK_ARRIVALS_PER_S, help="conversations ending per second (Poisson)"
    )
    parser.add_argument("--events-200ms", type=int, default=100, help="conversations with the CRM at 200 ms")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated conversations")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--markdown", action="store_true", help="print the tables for docs/performance.md")
    parser.add_argument("--from-json", type=Path, metavar="FILE", help="price a saved --json output again")
    parser.add_argument(
        "--memory-mb", type=int, action="append", default=[], help="also price at this MemorySize (repeatable)"
    )
    parser.add_argument(
        "--update-doc", type=Path, metavar="MD", help="replace the generated block in MD (docs/performance.md)"
    )
    args = parser.parse_args(argv)
    if not 100 <= args.events <= 20_000 or not 20 <= args.events_200ms <= 5_000 or args.events_burst < 0:
        parser.error("--events must be 100..20000, --events-200ms 20..5000, --events-burst 0 or more")

    if args.from_json:
        measured = json.loads(args.from_json.read_text(encoding="utf-8"))["measured"]
        output = result(measured, args.memory_mb)
        output["machine"] = json.loads(args.from_json.read_text(encoding="utf-8")).get("machine")
    else:
        defaults = template_defaults()  # fails before measuring if the template lacks what the prices need
        measured = measure(
            args.events,
            args.events_200ms,
            args.events_burst,
            args.seed,
            defaults["trace_sampling_rate"],
            args.arrival_rate,
        )
        output = {**result(measured, args.memory_mb), "machine": machine()}

    if args.update_doc:
        text = args.update_doc.read_text(encoding="utf-8")
        begin, end = DOC_MARKERS
        if begin not in text or end not in text:
            parser.error(f"--update-doc {args.update_doc}: no {begin} ... {end} block in it")
        head, rest = text.split(begin, 1)
        args.update_doc.write_text(f"{head}{begin}\n{markdown(output)}\n{end}{rest.split(end, 1)[1]}", "utf-8")
    if args.json:
        print(json.dumps(output))
    elif args.markdown:
        print(markdown(output))
    else:
        width = max(len(row["item"]) for row in output["items"])
        burst = "usd_per_million_local_burst" in output
        print(
            f"{'per million conversations':<{width}}  {'local':>8}  "
            + (f"{'burst':>8}  " if burst else "")
            + f"{'lambda, CRM 200 ms':>18}"
        )
        for row in output["items"]:
            print(
                f"{row['item']:<{width}}  {row['usd_local']:>8.2f}  "
                + (f"{row['usd_local_burst']:>8.2f}  " if burst else "")
                + f"{row['usd_lambda_200ms']:>18.2f}"
            )
        print(
            f"{'total':<{width}}  {output['usd_per_million_local']:>8.2f}  "
            + (f"{output['usd_per_million_local_burst']:>8.2f}  " if burst else "")
            + f"{output['usd_per_million_lambda_200ms']:>18.2f}   "
            f"(targets {TARGET_LOCAL:.2f} / {TARGET_LAMBDA_200MS:.2f}: {'met' if output['target_met'] else 'MISSED'})"
        )
        per = output["measured"]["per_conversation"]
        for mb, figures in output["at_memory_mb"].items():
            print(f"at MemorySize {mb} MB: {figures}")
        print(
            f"per conversation: {per['dynamodb_write_units']} write units, {per['log_bytes']:.0f} log bytes "
            f"({per['log_lines']} lines), {per['crm_requests']} CRM requests; calls: {per['aws_calls']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
