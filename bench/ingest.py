"""Benchmark: what a flood of forged webhooks costs ingest, and what it does to genuine ones.

The real ingest service (``aftercall.ingest.service.IngestService``: verify, normalise, PutEvents)
runs against a moto server in a child process (Secrets Manager for the signing secret, the bus).
One Lambda execution environment serves one request at a time and a function URL does not queue
(a request finding every environment of the reserved concurrency busy is throttled, 429), so the
unit measured here is one environment:

1. Service time, side by side in one run: a genuine signed Vapi end-of-call report (200, one
   PutEvents), and forged requests: a wrong HMAC on a normal body, no signature at all, a stale
   timestamp, and a wrong HMAC on a 6 MB body (the most a function URL takes). Forged requests per
   second one environment absorbs = 1 / mean service time.
2. Flood: one environment, genuine webhooks arriving at ``--genuine-rate`` per second (Poisson) and
   forged ones (wrong HMAC, normal body) at 0, 0.5, 0.9 and 2 times what the environment absorbs.
   A request that arrives while the environment is busy is throttled, as Lambda does. Reported:
   forged absorbed per second, the share of genuine requests answered 200 (the rest were
   throttled: the vendor must retry), and the p50/p99 of those answered.

With ``IngestReservedConcurrency`` environments (default 10) the absorbed rates scale by that
number: environments are separate processes with their own CPU.

    python bench/ingest.py [--samples 300] [--seconds 10] [--genuine-rate 10] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import queue
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _moto import MotoProcess

ROOT = Path(__file__).resolve().parents[1]
SECRET = "vapi-hmac-bench-secret-0001"
SIX_MB = 6 * 1024 * 1024 - 4096


def _environment(moto_url: str) -> None:
    """Point the runtime's AWS clients at moto before the runtime is imported."""
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_MAX_ATTEMPTS": "1",
            "POWERTOOLS_SERVICE_NAME": "aftercall-ingest",
            "POWERTOOLS_METRICS_NAMESPACE": "Aftercall",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "ERROR",
        }
    )


def _report() -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((ROOT / "events" / "vendor" / "vapi_end_of_call_report.json").read_text())
    payload["message"]["call"]["id"] = f"bench-{uuid.uuid4().hex}"
    return payload


class Requests:
    """Builds each kind of request, freshly signed (timestamps must be recent)."""

    def __init__(self) -> None:
        from aftercall.ingest.service import WebhookRequest
        from aftercall.ingest.signatures import sign_vapi

        self._request = WebhookRequest
        self._sign = sign_vapi
        big = _report()
        big["message"]["artifact"]["padding"] = "A" * (SIX_MB - len(json.dumps(big)))
        self._big = json.dumps(big).encode()

    def _post(self, body: bytes, headers: dict[str, str]) -> Any:
        return self._request("POST", "/vapi", {**headers, "content-type": "application/json"}, body)

    def genuine(self) -> Any:
        body = json.dumps(_report()).encode()
        return self._post(body, self._sign(body, SECRET, int(time.time())))

    def forged(self) -> Any:
        body = json.dumps(_report()).encode()
        return self._post(body, self._sign(body, "an-attackers-guess", int(time.time())))

    def unsigned(self) -> Any:
        return self._post(json.dumps(_report()).encode(), {})

    def stale(self) -> Any:
        body = json.dumps(_report()).encode()
        return self._post(body, self._sign(body, SECRET, int(time.time()) - 3600))

    def forged_6mb(self) -> Any:
        return self._post(self._big, self._sign(self._big, "an-attackers-guess", int(time.time())))


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def service_times(service: Any, requests: Requests, samples: int) -> dict[str, dict[str, float]]:
    """Each kind's service time in ms, the kinds interleaved so they share the machine's state."""
    kinds: dict[str, tuple[Callable[[], Any], int]] = {
        "genuine": (requests.genuine, 200),
        "forged_hmac": (requests.forged, 401),
        "unsigned": (requests.unsigned, 401),
        "stale_timestamp": (requests.stale, 401),
        "forged_hmac_6mb": (requests.forged_6mb, 401),
    }
    timings: dict[str, list[float]] = {name: [] for name in kinds}
    for index in range(samples):
        for name, (build, expected) in kinds.items():
            if name == "forged_hmac_6mb" and index % 10:
                continue  # a tenth as many: each is 6 MB
            request = build()
            started = time.perf_counter()
            answer = service.handle(request)
            timings[name].append((time.perf_counter() - started) * 1000)
            if answer.status != expected:
                raise RuntimeError(f"{name}: expected {expected}, got {answer.status} {answer.body}")
    return {
        name: {
            "mean_ms": round(statistics.fmean(values), 3),
            "p50_ms": round(_percentile(values, 0.5), 3),
            "p99_ms": round(_percentile(values, 0.99), 3),
            "per_s_per_environment": round(1000 / statistics.fmean(values), 1),
        }
        for name, values in timings.items()
    }


def flood(
    service: Any, requests: Requests, forged_rate: float, genuine_rate: float, seconds: float, seed: int
) -> dict[str, Any]:
    """One environment under Poisson arrivals; a request arriving while it is busy is throttled."""
    rng = random.Random(seed)
    arrivals: list[tuple[float, str]] = []
    for kind, rate in (("forged", forged_rate), ("genuine", genuine_rate)):
        moment = 0.0
        while rate > 0:
            moment += rng.expovariate(rate)
            if moment >= seconds:
                break
            arrivals.append((moment, kind))
    arrivals.sort()
    prepared = [
        (moment, kind, requests.genuine() if kind == "genuine" else requests.forged()) for moment, kind in arrivals
    ]
    work: queue.Queue[tuple[str, Any, float] | None] = queue.Queue(maxsize=1)
    busy = threading.Event()
    results: dict[str, list[float]] = {"forged": [], "genuine": []}
    statuses: dict[str, list[int]] = {"forged": [], "genuine": []}
    throttled = {"forged": 0, "genuine": 0}

    def environment() -> None:
        while (item := work.get()) is not None:
            kind, request, arrived = item
            answer = service.handle(request)
            results[kind].append((time.perf_counter() - arrived) * 1000)
            statuses[kind].append(answer.status)
            busy.clear()

    worker = threading.Thread(target=environment, daemon=True)
    worker.start()
    start = time.perf_counter()
    for moment, kind, request in prepared:
        delay = start + moment - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        if busy.is_set():
            throttled[kind] += 1
            continue
        busy.set()
        work.put((kind, request, time.perf_counter()))
    work.put(None)
    worker.join(timeout=120)
    elapsed = max(seconds, time.perf_counter() - start)
    genuine_total = len(results["genuine"]) + throttled["genuine"]
    ok = sum(1 for status in statuses["genuine"] if status == 200)
    return {
        "forged_offered_per_s": round(forged_rate, 1),
        "forged_absorbed_per_s": round(len(results["forged"]) / elapsed, 1),
        "forged_throttled": throttled["forged"],
        "genuine_sent": genuine_total,
        "genuine_200_share": round(ok / genuine_total, 3) if genuine_total else None,
        "genuine_throttled": throttled["genuine"],
        "genuine_p50_ms": round(_percentile(results["genuine"], 0.5), 2),
        "genuine_p99_ms": round(_percentile(results["genuine"], 0.99), 2),
    }


def erlang_b(offered: float, servers: int) -> float:
    """The share of Poisson arrivals a loss system of ``servers`` turns away at ``offered`` erlangs."""
    blocked = 1.0
    for count in range(1, servers + 1):
        blocked = offered * blocked / (count + offered * blocked)
    return blocked


def projection(times: dict[str, dict[str, float]], genuine_rate: float, environments: int) -> list[dict[str, Any]]:
    """Throttled share at ``environments`` (Erlang B: insensitive to the service-time distribution)."""
    forged_s, genuine_s = times["forged_hmac"]["mean_ms"] / 1000, times["genuine"]["mean_ms"] / 1000
    levels = []
    for factor in (0.0, 0.5, 0.9, 1.0, 2.0):
        forged_rate = factor * environments / forged_s
        offered = forged_rate * forged_s + genuine_rate * genuine_s
        levels.append(
            {
                "forged_per_s": round(forged_rate),
                "genuine_throttled_share": round(erlang_b(offered, environments), 4),
            }
        )
    return levels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--samples", type=int, default=300, help="requests of each kind for the service times")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each flood level")
    parser.add_argument("--genuine-rate", type=float, default=10.0, help="genuine webhooks per second in the flood")
    parser.add_argument("--environments", type=int, default=10, help="for the projection: IngestReservedConcurrency")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    with MotoProcess() as moto:
        _environment(moto.url)
        from aftercall.ingest.service import IngestService
        from aftercall.settings import IngestSettings

        secret_id = f"aftercall/bench/{uuid.uuid4().hex[:8]}"
        moto.client("secretsmanager").create_secret(Name=secret_id, SecretString=json.dumps({"vapi": SECRET}))
        bus = f"aftercall-bench-{uuid.uuid4().hex[:8]}"
        moto.client("events").create_event_bus(Name=bus)
        service = IngestService(
            IngestSettings(stage="sandbox", bus_name=bus, secret_id=secret_id), events_client=moto.client("events")
        )
        requests = Requests()
        # The EMF metrics each request writes (to stdout, as in Lambda) are written, then dropped.
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            service.handle(requests.genuine())  # warm: secret read and cached, clients built
            times = service_times(service, requests, args.samples)
            capacity = times["forged_hmac"]["per_s_per_environment"]
            levels = [
                flood(service, requests, capacity * factor, args.genuine_rate, args.seconds, seed=index)
                for index, factor in enumerate((0.0, 0.5, 0.9, 2.0))
            ]
    result = {
        "benchmark": "ingest under a forged flood (one environment)",
        "service_times": times,
        "flood": levels,
        "genuine_rate_per_s": args.genuine_rate,
        "forged_vs_genuine_cost": round(times["genuine"]["mean_ms"] / times["forged_hmac"]["mean_ms"], 1),
        "projection": {
            "environments": args.environments,
            "levels": projection(times, args.genuine_rate, args.environments),
        },
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print("ingest, one environment, moto on loopback (service time per request, side by side)")
    for name, figures in times.items():
        print(
            f"  {name:17} mean {figures['mean_ms']:8.2f} ms  p99 {figures['p99_ms']:8.2f} ms  "
            f"-> {figures['per_s_per_environment']:8.1f} /s per environment"
        )
    print(f"  a genuine request costs {result['forged_vs_genuine_cost']}x a forged one")
    print(f"flood: genuine at {args.genuine_rate}/s, forged at 0 / 0.5 / 0.9 / 2 x what one environment absorbs")
    for level in levels:
        print(
            f"  forged offered {level['forged_offered_per_s']:8.1f}/s "
            f"absorbed {level['forged_absorbed_per_s']:8.1f}/s | genuine 200 {level['genuine_200_share']} "
            f"({level['genuine_throttled']} throttled of {level['genuine_sent']}), "
            f"p50 {level['genuine_p50_ms']} ms, p99 {level['genuine_p99_ms']} ms"
        )
    print(f"projection at {args.environments} environments (Erlang B, from the service times above)")
    for point in result["projection"]["levels"]:
        print(f"  forged {point['forged_per_s']:>8}/s -> genuine throttled {point['genuine_throttled_share']:.2%}")
    print(f"  machine: {result['nproc']} CPUs, Python {result['python']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
