"""Benchmark: seeing what the End function does with an event — ``aftercall try`` vs the local stack.

The loop ``aftercall try`` replaces: start the local stack, emit the event, wait until the handler
processed it, read what reached the CRM. Both run side by side in one run over the same N
generated conversations (the generator's mix of inbound, outbound, follow-ups and notifications),
with the repository's End function:

* try: ``aftercall_ops.operations.try_function.try_events`` (validation, ``end_function``, the real adapters
  against the recording CRM), per event, after the process has started;
* local stack: ``LocalStack`` (moto server, the dispatcher, the real handler in a worker process,
  the fake HubSpot), PutEvents one event, then wait until the stack is idle, per event; the
  stack's start-up is reported apart.

    python bench/try_function.py [--n 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aftercall_ops.emulator.stack import LocalStack
from aftercall_ops.generate import conversations
from aftercall_ops.operations.emit import RawItem
from aftercall_ops.operations.try_function import DEFAULT_FUNCTION, load_function, try_events


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summary(seconds: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "p95_ms": round(percentile(seconds, 0.95) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=50, help="conversations each way (default 50)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 1 <= args.n <= 5000:
        parser.error("--n must be between 1 and 5000")
    details = conversations(args.n, seed=13, duplicates=0.0, invalid=0.0, environment="sandbox")
    function, path = load_function(DEFAULT_FUNCTION)

    items = [RawItem(f"#{index}", detail) for index, detail in enumerate(details)]
    report = try_events(items, function, function_name=DEFAULT_FUNCTION, user_file=path)  # as the CLI runs them
    unplanned = [r for r in report.results if r.outcome != "planned"]
    if unplanned:
        raise SystemExit(f"try did not plan {unplanned[0].conversation_id}: {unplanned[0].error}")
    tried = [r.seconds for r in report.results]

    started = time.perf_counter()
    with LocalStack("aftercall-bench-try", workers=1, state_dir=Path(tempfile.mkdtemp(prefix="bench-try-"))) as stack:
        startup = time.perf_counter() - started
        events = stack.client("events")
        processed: list[float] = []
        for detail in details:
            begun = time.perf_counter()
            answer = events.put_events(
                Entries=[
                    {
                        "EventBusName": stack.outputs["EventBusName"],
                        "Source": stack.outputs["EventSource"],
                        "DetailType": "Conversation Ended",
                        "Detail": json.dumps(detail),
                    }
                ]
            )
            if answer["FailedEntryCount"]:
                raise SystemExit(f"PutEvents refused {detail['conversation_id']}")
            stack.wait_idle(timeout=120)
            processed.append(time.perf_counter() - begun)

    result: dict[str, Any] = {
        "benchmark": "try_function",
        "conversations": args.n,
        "try": summary(tried),
        "local_stack": {**summary(processed), "startup_s": round(startup, 2)},
        "ratio_median": round(statistics.median(processed) / statistics.median(tried), 1),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"try: median {result['try']['median_ms']} ms, p95 {result['try']['p95_ms']} ms per event | "
            f"local stack: median {result['local_stack']['median_ms']} ms, p95 {result['local_stack']['p95_ms']} ms "
            f"per event (+{result['local_stack']['startup_s']} s start) | try is {result['ratio_median']}x faster"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
