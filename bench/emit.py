"""Benchmark: emit N events — ours (batched PutEvents) vs one PutEvents call per event.

Both run side by side in one process against one moto server (in a child process, on loopback)
and send the same N generated conversations to the same bus. By default the bus has no rule:
moto delivers an event to its rule's targets inside the PutEvents call (EventBridge does that
after answering), which would charge moto's per-event delivery work to the caller and hide what
is measured, the cost of the calls. ``--with-rule`` adds the local stack's rule anyway.

* ours: ``aftercall_ops.operations.emit.send``: batches of 10 entries (and at most 256 KB), ``--concurrency``
  calls in flight (the CLI's default, 4), FailedEntries retried;
* naive: one PutEvents call per event, one after the other.

Every AWS API call is counted with a botocore ``before-call`` hook.

    python bench/emit.py [--n 2000] [--concurrency 4] [--with-rule] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from _moto import MotoProcess
from replay import Counter, add_rule, side_by_side

from aftercall_ops.operations import emit


def naive(client: Any, entries: list[emit.PreparedEntry]) -> int:
    """One PutEvents per event; returns how many were accepted."""
    accepted = 0
    for entry in entries:
        answer = client.put_events(Entries=[entry.entry])
        accepted += 1 - int(answer["FailedEntryCount"])
    return accepted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=2000, help="events to emit each way (default 2000)")
    parser.add_argument("--concurrency", type=int, default=4, help="our concurrency (default: the CLI's, 4)")
    parser.add_argument("--with-rule", action="store_true", help="deliver every event to an SQS queue via a rule")
    parser.add_argument("--moto-as-is", action="store_true", help="run moto unchanged (see bench/_moto.py)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 1 <= args.n <= 100_000:
        parser.error("--n must be between 1 and 100000")
    source, bus = "aftercall.platform", "aftercall-bench"
    items = emit.generated(args.n, seed=5, duplicates=0.0, invalid=0.0, environment="sandbox")
    entries = emit.prepare(items, bus=bus, source=source, environment="sandbox")

    with MotoProcess(fast_moto=not args.moto_as_is) as moto:
        moto.client("events").create_event_bus(Name=bus)
        if args.with_rule:
            add_rule(moto.client("sqs"), moto.client("events"), bus, source)

        naive_counter = Counter()
        naive_client = naive_counter.attach(moto.client("events"))
        started = time.perf_counter()
        naive_accepted = naive(naive_client, entries)
        naive_seconds = time.perf_counter() - started

        ours_counter = Counter()
        ours_client = ours_counter.attach(moto.client("events", args.concurrency + 2))
        started = time.perf_counter()
        report = emit.send(ours_client, entries, concurrency=args.concurrency)
        ours_seconds = time.perf_counter() - started

    if report.accepted != args.n or naive_accepted != args.n:
        print(f"incomplete run: ours {report.accepted}, naive {naive_accepted} of {args.n}", file=sys.stderr)
        return 1
    result = side_by_side("emit", args, ours_seconds, naive_seconds, ours_counter, naive_counter)
    if args.json:
        print(json.dumps(result))
    else:
        wiring = "a rule delivering to SQS" if args.with_rule else "no rule"
        print(f"emit of {args.n} events, moto server on loopback, bus with {wiring}")
        ours = f"ours  (batches of 10, concurrency {args.concurrency}):"
        print(f"  {ours} {result['ours_per_s']:8.1f} events/s  ({ours_seconds:.2f} s)")
        print(
            f"  naive (one PutEvents per event):        {result['naive_per_s']:8.1f} events/s  ({naive_seconds:.2f} s)"
        )
        print(f"  ratio: {result['ratio']}x")
        print(
            f"  API calls per event: ours {result['api_calls_per_message']}, "
            f"naive {result['naive_api_calls_per_message']}"
        )
        print(f"  machine: {result['nproc']} CPUs, Python {result['python']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
