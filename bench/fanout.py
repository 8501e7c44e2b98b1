"""Benchmark: one conversation's four independent actions, one after another vs concurrently.

The real End handler (``EndHandlerRuntime.handle``: parse, Powertools idempotency, end_function,
the action ledger, the actions) runs against a moto server (in a child process, on loopback, so
its work does not compete with the handler for one interpreter) and the fake HubSpot answering
every request after 200 ms (its ``latency`` fault). The End function plans four independent
actions: a summary note, a ticket, the disposition, and a notification (SNS).

Three measurements per run, side by side in one process, in alternating order, each on a fresh
conversation id and a warm runtime (clients and CRM session made by a first, unmeasured call):

* sequential: ``EndHandlerSettings(action_concurrency=1)``, one action after another (the platform docs' way);
* concurrent: the default, every action at once;
* slowest alone: each of the four actions performed by itself through the runtime's
  ``perform_actions`` (its ledger claim and completion included); the slowest of the four.

Two customer scenarios: ``known`` (the runtime has looked the contact up before, as for a repeat
caller) and ``new`` (a new lead per conversation: every run seeds a contact the runtime has never
looked up, so the contact search is on the path).

    python bench/fanout.py [--json] [--runs N] [--latency-ms 200] [--scenario new|known|both]

Prints the median of each, the ratio sequential / concurrent, and concurrent / slowest alone.
``--json`` prints one object: the primary scenario's figures at the top level (``sequential_s``,
``concurrent_s``, ``ratio``, ``over_slowest``, ...) and every scenario under ``scenarios``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.synchronize
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

REPO = Path(__file__).resolve().parents[1]
for _path in ("layers/aftercall", "ops"):
    if str(REPO / _path) not in sys.path:
        sys.path.insert(0, str(REPO / _path))

TARGET_RATIO = 3.0
TARGET_OVER_SLOWEST = 1.25
ACTIONS = ("crm_summary", "support_ticket", "disposition", "notification:team")


# --- the moto server, in a child process -----------------------------------------------------------


def _serve_moto(port_pipe: multiprocessing.connection.Connection, stop: multiprocessing.synchronize.Event) -> None:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port_pipe.send(server.get_host_and_port()[1])
    stop.wait(3600)  # bounded: a benchmark never runs for an hour
    server.stop()


@contextmanager
def moto_server() -> Iterator[str]:
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_serve_moto, args=(sender, stop), daemon=True)
    process.start()
    try:
        if not receiver.poll(60):
            raise RuntimeError("the moto server did not start within 60 s")
        yield f"http://127.0.0.1:{receiver.recv()}"
    finally:
        stop.set()
        process.join(timeout=10)
        if process.is_alive():
            process.kill()


def _environment(endpoint: str) -> None:
    """What the Lambda would have, pointed at the local moto server; set before the runtime loads."""
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "POWERTOOLS_SERVICE_NAME": "aftercall",
            "POWERTOOLS_METRICS_NAMESPACE": "Aftercall",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "AFTERCALL_LOCAL": "true",
        }
    )
    os.environ.pop("AWS_PROFILE", None)


# --- measurement ----------------------------------------------------------------------------------


@dataclass
class Samples:
    sequential: list[float] = field(default_factory=list)
    concurrent: list[float] = field(default_factory=list)
    slowest_alone: list[float] = field(default_factory=list)
    slowest_action: list[str] = field(default_factory=list)
    crm_requests: dict[str, list[int]] = field(default_factory=lambda: {"sequential": [], "concurrent": []})
    #: Concurrent runs: (before the first CRM request, the CRM's span, after its last answer), seconds.
    phases: list[tuple[float, float, float]] = field(default_factory=list)
    latency_s: float = 0.2

    def figures(self) -> dict[str, Any]:
        sequential = statistics.median(self.sequential)
        concurrent = statistics.median(self.concurrent)
        slowest = statistics.median(self.slowest_alone)
        ratio = sequential / concurrent
        over = concurrent / slowest
        # With no overhead at all, the ratio would be the CRM round trips one after another over the
        # round trips on the concurrent critical path (the CRM's span divided by its latency).
        sequential_trips = statistics.median(self.crm_requests["sequential"])
        critical_trips = round(statistics.median(span for _, span, _ in self.phases) / self.latency_s)
        return {
            "sequential_s": round(sequential, 4),
            "concurrent_s": round(concurrent, 4),
            "ratio": round(ratio, 2),
            "slowest_alone_s": round(slowest, 4),
            "slowest_action": statistics.mode(self.slowest_action),
            "over_slowest": round(over, 3),
            "meets_target": ratio >= TARGET_RATIO and over <= TARGET_OVER_SLOWEST,
            "meets_ratio_target": ratio >= TARGET_RATIO,
            "meets_over_slowest_target": over <= TARGET_OVER_SLOWEST,
            "crm_requests_per_conversation": {
                mode: statistics.median(counts) for mode, counts in self.crm_requests.items() if counts
            },
            "crm_round_trips_on_concurrent_path": critical_trips,
            "ratio_ceiling": round(sequential_trips / critical_trips, 2) if critical_trips else None,
            "concurrent_phases_ms": {
                name: round(statistics.median(phase[index] for phase in self.phases) * 1000, 1)
                for index, name in enumerate(("before_first_crm_request", "crm_span", "after_last_crm_answer"))
            },
            "samples": {
                "sequential_s": [round(s, 4) for s in self.sequential],
                "concurrent_s": [round(s, 4) for s in self.concurrent],
                "slowest_alone_s": [round(s, 4) for s in self.slowest_alone],
            },
        }


def run(runs: int, latency_ms: float, scenarios: list[str]) -> dict[str, Any]:
    with moto_server() as endpoint:
        _environment(endpoint)
        # The handler prints its EMF metrics to stdout (Lambda sends them to CloudWatch): keep the cost,
        # not the noise.
        with open(os.devnull, "w") as devnull, redirect_stdout(devnull):
            return _run(runs, latency_ms, scenarios)


def _run(runs: int, latency_ms: float, scenarios: list[str]) -> dict[str, Any]:
    # Imported here: Powertools reads its environment at import.

    from aftercall import aws
    from aftercall.actions import ActionPlan, perform_actions
    from aftercall.conversation import Conversation
    from aftercall.deadline import Deadline
    from aftercall.handler import EndHandlerRuntime, parse_event
    from aftercall.settings import EndHandlerSettings
    from aftercall_ops.fakes.hubspot import FakeCrm

    logging.getLogger("aftercall").setLevel(logging.WARNING)
    name = f"bench-fanout-{uuid.uuid4().hex[:8]}"
    aws.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    queue_url = aws.client("sqs").create_queue(QueueName=name)["QueueUrl"]
    topic_arn = aws.client("sns").create_topic(Name=name)["TopicArn"]

    with FakeCrm(token="bench-token") as crm:
        aws.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps({"access_token": crm.token}))
        base = EndHandlerSettings(
            stage="sandbox",
            idempotency_table=name,
            crm_provider="hubspot",
            crm_secret_id=name,
            crm_base_url=crm.url,
            failed_events_queue_url=queue_url,
            local_mode=True,
            notifications_topic_arn=topic_arn,
        )
        sequential = EndHandlerRuntime(replace(base, action_concurrency=1))
        concurrent = EndHandlerRuntime(base)

        def end_function(conv: Conversation) -> None:
            conv.actions.log_summary({"topic": conv.state.get("last_topic"), "sentiment": conv.state.get("sentiment")})
            conv.actions.open_ticket("Renewal quote", "Send the 2027 renewal quote", "HIGH")
            conv.actions.log_disposition("info_requested")
            conv.actions.notify("Hot lead: renewal", {"Campaign": conv.state.get("campaign")})

        known_phone = _new_contact(crm)

        def event_for(phone: str) -> dict[str, Any]:
            return _event(phone)

        # Warm both runtimes (boto3 clients, the CRM session and secret, the known contact), unmeasured.
        for runtime in (sequential, concurrent):
            runtime.handle(event_for(known_phone), _context(), end_function)
        crm.add_fault("latency", ms=latency_ms)

        def timed_handle(runtime: EndHandlerRuntime, phone: str) -> tuple[float, list[Any], float]:
            """The handler's time, the CRM requests it made, and when it started (monotonic)."""
            event = event_for(phone)
            before = len(crm.requests)
            started_at = time.monotonic()
            started = time.perf_counter()
            report = runtime.handle(event, _context(), end_function)
            elapsed = time.perf_counter() - started
            assert report["status"] == "processed"
            assert {o["status"] for o in report["actions"].values()} == {"done"}, report
            return elapsed, crm.requests[before:], started_at

        def slowest_alone(phone_for: Callable[[], str]) -> tuple[float, str]:
            """Each action performed by itself (ledger claim + action + completion), the slowest."""
            times: dict[str, float] = {}
            for action_name in ACTIONS:
                detail = parse_event(event_for(phone_for()), "sandbox")
                plan = ActionPlan(detail, concurrent.crm, concurrent.follow_ups, concurrent.notifier)
                end_function(Conversation(detail, plan))
                (action,) = [a for a in plan.planned if a.name == action_name]
                started = time.perf_counter()
                (outcome,) = perform_actions(detail.conversation_id, (action,), concurrent.ledger, Deadline.after(60))
                times[action_name] = time.perf_counter() - started
                assert outcome.status == "done", outcome
            slowest = max(times, key=lambda n: times[n])
            return times[slowest], slowest

        def measure(scenario: str) -> Samples:
            samples = Samples(latency_s=latency_ms / 1000)

            def phone() -> str:
                return known_phone if scenario == "known" else _new_contact(crm)

            for index in range(runs):
                order = ("sequential", "concurrent", "alone")
                for step in order if index % 2 == 0 else order[::-1]:
                    if step == "alone":
                        elapsed, action_name = slowest_alone(phone)
                        samples.slowest_alone.append(elapsed)
                        samples.slowest_action.append(action_name)
                        continue
                    elapsed, requests, started_at = timed_handle(
                        sequential if step == "sequential" else concurrent, phone()
                    )
                    getattr(samples, step).append(elapsed)
                    samples.crm_requests[step].append(len(requests))
                    if step == "concurrent":
                        first = min(r.received for r in requests) - started_at
                        last = max(r.answered for r in requests) - started_at
                        samples.phases.append((first, last - first, elapsed - last))
            return samples

        results = {scenario: measure(scenario).figures() for scenario in scenarios}
        crm.clear_faults()
    return results


def _new_contact(crm: Any) -> str:
    phone = "+1628" + f"{uuid.uuid4().int % 10**7:07d}"
    crm.add_contact(phone=phone, properties={"firstname": "Lead", "hs_lead_status": "NEW"})
    return phone


def _event(phone: str) -> dict[str, Any]:
    ended = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Conversation Ended",
        "source": "aftercall.platform",
        "account": "123456789012",
        "time": ended.isoformat().replace("+00:00", "Z"),
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "schema_version": "1.0",
            "conversation_id": f"bench-{uuid.uuid4().hex}",
            "environment": "sandbox",
            "channel": "voice",
            "direction": "outbound",
            "started_at": (ended - timedelta(seconds=240)).isoformat().replace("+00:00", "Z"),
            "ended_at": ended.isoformat().replace("+00:00", "Z"),
            "duration_seconds": 240,
            "caller": "+18005550100",
            "callee": phone,
            "agent_id": "agent-sales-outbound",
            "ended_reason": "completed",
            "state": {"campaign": "renewal-2027", "last_topic": "renewal", "sentiment": "Positive"},
        },
    }


def _context() -> LambdaContext:
    return cast("LambdaContext", _Context())


class _Context:
    """What the runtime reads from Lambda's context."""

    function_name = "aftercall-bench-EndHandler"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:aftercall-bench-EndHandler"
    log_group_name = "/aws/lambda/aftercall-bench-EndHandler"
    log_stream_name = "bench"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + 60

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


# --- output ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        # Other work on the machine skews the figures (the ratio, measured side by side, least).
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--runs", type=int, default=7, help="runs per scenario (default 7)")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="the fake CRM's latency (default 200)")
    parser.add_argument("--scenario", choices=("new", "known", "both"), default="both")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    scenarios = ["new", "known"] if args.scenario == "both" else [args.scenario]
    results = run(args.runs, args.latency_ms, scenarios)
    primary = scenarios[0]
    summary: dict[str, Any] = {
        **{k: v for k, v in results[primary].items() if k != "samples"},
        "scenario": primary,
        "runs": args.runs,
        "crm_latency_ms": args.latency_ms,
        "actions": list(ACTIONS),
        "target": {"ratio": TARGET_RATIO, "over_slowest": TARGET_OVER_SLOWEST},
        "machine": machine(),
        "scenarios": results,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"fan-out: 4 independent actions, fake CRM latency {args.latency_ms:g} ms, {args.runs} runs, medians "
        f"(nproc {summary['machine']['nproc']}, Python {summary['machine']['python']}, "
        f"load average {summary['machine']['load_average_1m']})"
    )
    for scenario, figures in results.items():
        requests = figures["crm_requests_per_conversation"]
        print(
            f"  {scenario:>5} contact: sequential {figures['sequential_s']:.3f} s | concurrent "
            f"{figures['concurrent_s']:.3f} s | ratio {figures['ratio']:.2f}x (target >= {TARGET_RATIO:g}x) | "
            f"slowest alone ({figures['slowest_action']}) {figures['slowest_alone_s']:.3f} s | over slowest "
            f"{figures['over_slowest']:.3f}x (target <= {TARGET_OVER_SLOWEST:g}x) | CRM requests "
            f"seq {requests.get('sequential')} / conc {requests.get('concurrent')}"
        )
        phases = figures["concurrent_phases_ms"]
        trips = figures["crm_round_trips_on_concurrent_path"]
        print(
            f"        ceiling without overhead {figures['ratio_ceiling']}x "
            f"({requests.get('sequential')} CRM round trips in a row vs {trips} on the concurrent path); "
            f"concurrent run: {phases['before_first_crm_request']} ms before the first CRM request, "
            f"CRM {phases['crm_span']} ms, {phases['after_last_crm_answer']} ms after its last answer"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
