"""Benchmark: replay N failed events (put-events mode) — ours vs a naive one-at-a-time loop.

Both run side by side in one process against one moto server (in a child process, on loopback),
each over its own queue seeded with the same N Lambda OnFailure records, putting events on the
same bus. By default that bus has no rule: moto delivers an event to its rule's targets inside
the PutEvents call (EventBridge does that asynchronously, after answering), which would charge
moto's per-event delivery work to the caller and hide what is measured here, the cost of the
calls. ``--with-rule`` adds the local stack's rule (every event copied into an SQS queue) anyway.

* ours: ``aftercall_ops.operations.replay.replay`` in put-events mode: receive 10, one PutEvents for the ten,
  one DeleteMessageBatch, ``--concurrency`` such loops at once (the CLI's default, 4);
* naive: receive one, PutEvents one, delete one, until the queue is empty.

Every AWS API call is counted with a botocore ``before-call`` hook (seeding is not counted).

    python bench/replay.py [--n 2000] [--concurrency 4] [--with-rule] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from _moto import MotoProcess

from aftercall_ops.generate import conversations
from aftercall_ops.operations.replay import ReplayOptions, replay


class Counter:
    """Counts API calls made by the clients it is attached to."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-call.*.*", self._count)
        return client

    def _count(self, **_: Any) -> None:
        with self._lock:
            self.calls += 1


def record(detail: dict[str, Any], source: str) -> str:
    """A Lambda OnFailure record around a full EventBridge event, as the queue holds them."""
    event = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Conversation Ended",
        "source": source,
        "account": "123456789012",
        "time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }
    return json.dumps(
        {
            "version": "1.0",
            "timestamp": event["time"],
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:aftercall-EndHandler:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3,
            },
            "requestPayload": event,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorType": "ActionsFailedError", "errorMessage": "crm_note failed: 503"},
        }
    )


def seed(sqs: Any, queue_url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)


def add_rule(sqs: Any, events: Any, bus: str, source: str) -> None:
    """The local stack's wiring: a rule on the pattern, delivering the whole event to an SQS queue."""
    delivered = sqs.create_queue(QueueName="delivered")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=delivered, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(
        Name="conversation-ended",
        EventBusName=bus,
        EventPattern=json.dumps({"detail-type": ["Conversation Ended"], "source": [source]}),
    )
    transformer = {"InputPathsMap": {}, "InputTemplate": "<aws.events.event.json>"}
    events.put_targets(
        Rule="conversation-ended", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn, "InputTransformer": transformer}]
    )


def depth(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def naive(sqs: Any, events: Any, queue_url: str, bus: str, limit: int) -> int:
    """Receive one, put one, delete one; bounded by ``limit`` iterations."""
    done = 0
    for _ in range(limit):
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1).get("Messages", [])
        if not messages:
            break
        message = messages[0]
        body = json.loads(message["Body"])
        event = body.get("requestPayload", body)
        answer = events.put_events(
            Entries=[
                {
                    "Source": event["source"],
                    "DetailType": event["detail-type"],
                    "Detail": json.dumps(event["detail"]),
                    "EventBusName": bus,
                }
            ]
        )
        if answer["FailedEntryCount"] == 0:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            done += 1
    return done


def side_by_side(
    benchmark: str,
    args: argparse.Namespace,
    ours_seconds: float,
    naive_seconds: float,
    ours_counter: Counter,
    naive_counter: Counter,
) -> dict[str, Any]:
    """The one JSON result shape of bench/emit.py and bench/replay.py: ours vs naive, same run."""
    ours_rate, naive_rate = args.n / ours_seconds, args.n / naive_seconds
    return {
        "benchmark": benchmark,
        "messages": args.n,
        "concurrency": args.concurrency,
        "ours_seconds": round(ours_seconds, 3),
        "naive_seconds": round(naive_seconds, 3),
        "ours_per_s": round(ours_rate, 1),
        "naive_per_s": round(naive_rate, 1),
        "ratio": round(ours_rate / naive_rate, 2),
        "api_calls": ours_counter.calls,
        "api_calls_per_message": round(ours_counter.calls / args.n, 3),
        "naive_api_calls_per_message": round(naive_counter.calls / args.n, 3),
        "moto_sped_up": not args.moto_as_is,
        "rule_on_bus": args.with_rule,
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=2000, help="failed events in each queue (default 2000)")
    parser.add_argument("--concurrency", type=int, default=4, help="our concurrency (default: the CLI's, 4)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--with-rule", action="store_true", help="deliver every event to an SQS queue via a rule")
    parser.add_argument("--moto-as-is", action="store_true", help="run moto unchanged (see bench/_moto.py)")
    args = parser.parse_args(argv)
    if not 1 <= args.n <= 100_000:
        parser.error("--n must be between 1 and 100000")
    source = "aftercall.platform"
    details = conversations(args.n, seed=11)
    bodies = [record(detail, source) for detail in details]

    with MotoProcess(fast_moto=not args.moto_as_is) as moto:
        setup_sqs, setup_events = moto.client("sqs"), moto.client("events")
        bus = "aftercall-bench"
        setup_events.create_event_bus(Name=bus)
        if args.with_rule:
            add_rule(setup_sqs, setup_events, bus, source)
        ours_queue = setup_sqs.create_queue(QueueName="failed-ours", Attributes={"VisibilityTimeout": "300"})[
            "QueueUrl"
        ]
        naive_queue = setup_sqs.create_queue(QueueName="failed-naive", Attributes={"VisibilityTimeout": "300"})[
            "QueueUrl"
        ]
        seed(setup_sqs, ours_queue, bodies)
        seed(setup_sqs, naive_queue, bodies)

        # Naive first, then ours: any warm-up advantage goes to the naive loop.
        naive_counter = Counter()
        naive_sqs, naive_events = naive_counter.attach(moto.client("sqs")), naive_counter.attach(moto.client("events"))
        started = time.perf_counter()
        naive_done = naive(naive_sqs, naive_events, naive_queue, bus, limit=args.n + 10)
        naive_seconds = time.perf_counter() - started

        ours_counter = Counter()
        pool = args.concurrency + 4
        ours_sqs = ours_counter.attach(moto.client("sqs", pool))
        ours_events = ours_counter.attach(moto.client("events", pool))
        started = time.perf_counter()
        report = replay(
            ours_sqs,
            ours_queue,
            ReplayOptions(mode="put-events", concurrency=args.concurrency),
            events=ours_events,
            bus=bus,
        )
        ours_seconds = time.perf_counter() - started
        ours_done = report.count("replayed")
        left = depth(setup_sqs, ours_queue), depth(setup_sqs, naive_queue)

    if ours_done != args.n or naive_done != args.n or left != (0, 0):
        print(f"incomplete run: ours {ours_done}, naive {naive_done}, left in queues {left}", file=sys.stderr)
        return 1
    result = side_by_side("replay (put-events mode)", args, ours_seconds, naive_seconds, ours_counter, naive_counter)
    if args.json:
        print(json.dumps(result))
    else:
        wiring = "a rule delivering to SQS" if args.with_rule else "no rule"
        print(f"replay of {args.n} DLQ messages (put-events mode), moto server on loopback, bus with {wiring}")
        ours = f"ours  (batched, concurrency {args.concurrency}):"
        print(f"  {ours} {result['ours_per_s']:8.1f} msg/s  ({ours_seconds:.2f} s)")
        print(f"  naive (receive 1, put 1, delete 1):   {result['naive_per_s']:8.1f} msg/s  ({naive_seconds:.2f} s)")
        print(f"  ratio: {result['ratio']}x")
        print(
            f"  API calls per message: ours {result['api_calls_per_message']}, "
            f"naive {result['naive_api_calls_per_message']}"
        )
        print(f"  machine: {result['nproc']} CPUs, Python {result['python']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
