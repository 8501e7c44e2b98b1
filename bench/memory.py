"""Benchmark: memory of one warm End function process over 1,000 conversations.

One fresh process (``bench/_lambda_child.py``, Lambda's variables, tracing on) imports the handler
once and then handles N events one after another, as a warm Lambda execution environment does:
distinct conversations in the generator's mix (two thirds inbound support calls, of which some
open a ticket; one third outbound calls with a disposition), 1% malformed events that are
rejected and parked. The stack (moto server and fake HubSpot, loopback only) runs in this
process, so none of its memory is counted.

Reported: RSS after the import, after 100 and after N events (``VmRSS`` from /proc/self/status,
after a ``gc.collect()``), the peak (``VmHWM``), live objects, and whether RSS after N is within
10% of RSS after 100 (no growth per invocation). Also what the cost estimate in
docs/performance.md needs: warm duration and CPU time per invocation, AWS calls and CRM requests
per conversation, log bytes per conversation. ``--diagnose`` adds tracemalloc's top allocation
growth between event 100 and event N (slower; RSS then includes tracemalloc's own memory).

    python bench/memory.py [--events 1000] [--json] [--diagnose] [--state-kb 190]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from _lambda_stack import BenchStack, machine, median
from _per_conversation import metric_series, per_conversation, run_warm, table_items

GROWTH_LIMIT = 0.10


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1000, help="events handled by the warm process")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated conversations")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--diagnose", action="store_true", help="tracemalloc growth between event 100 and the last")
    parser.add_argument(
        "--state-kb", type=int, default=0, help="add a transcript of about this many KB to every state (max 190)"
    )
    args = parser.parse_args(argv)
    if not 200 <= args.events <= 20_000:
        parser.error("--events must be between 200 and 20000")
    if not 0 <= args.state_kb <= 190:
        parser.error("--state-kb must be between 0 and 190 (the contract's state limit is 200 KB)")

    last = args.events
    checkpoints = sorted({1, 10, 50, 100, *range(200, last + 1, max(100, last // 10)), last})
    extra = ["--checkpoints", ",".join(map(str, checkpoints))]
    if args.diagnose:
        extra += ["--tracemalloc", f"100,{last}"]
    with BenchStack() as stack:
        run = run_warm(stack, last, seed=args.seed, extra=extra, state_kb=args.state_kb)
        crm = stack.crm_requests()
        memory_size = stack.memory_mb
        sizes = table_items(stack)

    report = run.report
    series = metric_series(run.log_text)
    samples: dict[str, dict[str, float]] = report["memory"]
    rss_100, rss_last = samples["100"]["rss_mb"], samples[str(last)]["rss_mb"]
    growth = (rss_last - rss_100) / rss_100
    warm = report["durations_ms"][1:]
    warm_cpu = report["cpu_ms"][1:]
    conversations = report["invocations"]
    output: dict[str, Any] = {
        "benchmark": "memory",
        "events": conversations,
        "statuses": report["statuses"],
        "errors": report["errors"],
        "peak_rss_mb": report["memory_at_end"]["peak_rss_mb"],
        "rss_after_import_mb": report["memory_after_import"]["rss_mb"],
        "rss_1_mb": samples["1"]["rss_mb"],
        "rss_100_mb": rss_100,
        "rss_1000_mb" if last == 1000 else f"rss_{last}_mb": rss_last,
        "rss_last_mb": rss_last,
        "growth_100_to_last": round(growth, 4),
        "growth_per_invocation_kb": round((rss_last - rss_100) * 1024 / (last - 100), 2),
        "growth_limit": GROWTH_LIMIT,
        "target_met": growth <= GROWTH_LIMIT,
        "rss_curve_mb": {n: s["rss_mb"] for n, s in samples.items()},
        "gc_objects": {n: s["gc_objects"] for n, s in samples.items()},
        "memory_size_mb": memory_size,
        "state_kb": args.state_kb,
        "import_ms": report["import_ms"],
        "import_cpu_ms": report["import_cpu_ms"],
        "first_invoke_ms": report["first_invoke_ms"],
        "warm_duration_ms": {
            "mean": round(sum(warm) / len(warm), 2),
            "median": round(median(warm), 2),
            "p90": round(percentile(warm, 0.90), 2),
            "p99": round(percentile(warm, 0.99), 2),
            "billed_mean": round(sum(math.ceil(d) for d in warm) / len(warm), 2),
        },
        "warm_cpu_ms": {"mean": round(sum(warm_cpu) / len(warm_cpu), 2), "median": round(median(warm_cpu), 2)},
        "per_conversation": per_conversation(run, crm, sizes),
        "metric_series": len(series),
        "metric_series_names": series,
        "machine": machine(),
    }
    if "allocation_growth" in report:
        output["allocation_growth_100_to_last"] = report["allocation_growth"]

    if args.json:
        print(json.dumps(output))
        return 0
    print(f"one warm process, {conversations} conversations ({output['statuses']}):")
    print(f"  RSS after import      {output['rss_after_import_mb']:8.1f} MB")
    for n, rss in output["rss_curve_mb"].items():
        print(f"  RSS after {int(n):>5} events {rss:8.1f} MB   ({output['gc_objects'][n]} live objects)")
    print(f"  peak RSS (VmHWM)      {output['peak_rss_mb']:8.1f} MB   (MemorySize in template.yaml: {memory_size} MB)")
    verdict = "met" if output["target_met"] else "MISSED"
    print(
        f"growth from event 100 to {last}: {growth * 100:+.1f}% "
        f"({output['growth_per_invocation_kb']:+.2f} KB per invocation; target ≤ {GROWTH_LIMIT * 100:.0f}%: {verdict})"
    )
    d = output["warm_duration_ms"]
    print(
        f"warm invocation: mean {d['mean']} ms, median {d['median']} ms, p90 {d['p90']} ms, p99 {d['p99']} ms; "
        f"CPU {output['warm_cpu_ms']['mean']} ms mean"
    )
    per = output["per_conversation"]
    print(
        f"per conversation: {per['crm_requests']} CRM requests, {per['log_bytes']:.0f} log bytes, "
        f"{per['table_items']} table items (mean {per['table_item_bytes_mean']:.0f} B, "
        f"max {per['table_item_bytes_max']} B); by call:"
    )
    for op, n in per["aws_calls"].items():
        print(f"  {op:<40} {n:6.3f}")
    for route, n in per["crm_requests_by_route"].items():
        print(f"  CRM {route:<36} {n:6.3f}")
    print(f"custom metrics the EMF lines create: {len(series)} distinct series (CloudWatch bills each per month)")
    if "allocation_growth_100_to_last" in output:
        print("allocation growth (tracemalloc, event 100 → last):")
        for line in output["allocation_growth_100_to_last"]:
            print(f"  {line}")
    m = output["machine"]
    print(f"machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}, load {m['load_average']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
