"""One Lambda execution environment for the performance benchmarks: a fresh process, one handler.

The benchmarks start this file as ``python -S bench/_lambda_child.py ...`` (``-S``: no site
processing, so the interpreter starts as bare as Lambda's, and ``sys.path`` is exactly what the
parent passes: the function's code, the layer, then what stands in for the runtime's boto3). It
imports the handler, invokes it once per event of a JSON-lines file with a Lambda-like context,
and writes one JSON report to its original stdout; everything the function prints (Powertools'
logs and EMF metrics) goes to the log file instead, whose size the parent can read.

Only the standard library is imported before the handler, and the same way for every handler,
so the figures of two handlers are comparable. Timings are ``time.perf_counter`` deltas taken
here; the parent also times the whole process from spawn to report.

``--no-bytecode-under DIR`` makes modules under DIR compile from source and never read or write
``__pycache__`` (a read-only Lambda layer that ships no ``.pyc`` files behaves like that).
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import argparse  # noqa: E402 - after the clock starts
import gc  # noqa: E402
import importlib  # noqa: E402
import importlib.machinery  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

Handler = Callable[[Any, Any], Any]


class Context:
    """What the Python runtime's context object offers (Powertools and the runtime read these)."""

    def __init__(self, timeout_s: float) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "bench")
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles modules under :data:`NO_BYTECODE_UNDER` from source each time; others load normally."""

    prefixes: tuple[str, ...] = ()

    def path_stats(self, path: str) -> dict[str, Any]:
        if path.startswith(self.prefixes):
            # SourceLoader.get_code skips the bytecode cache (no read, no write) when this fails.
            raise OSError("no bytecode cache under a read-only layer")
        return dict(super().path_stats(path))


def _no_bytecode_under(directories: Sequence[str]) -> None:
    # A package directory covers everything under it; a single-file module (six.py) is matched exactly.
    _SourceOnlyLoader.prefixes = tuple(os.path.join(d, "") if os.path.isdir(d) else d for d in directories)
    details: list[tuple[Any, list[str]]] = [
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
        (_SourceOnlyLoader, importlib.machinery.SOURCE_SUFFIXES),
        (importlib.machinery.SourcelessFileLoader, importlib.machinery.BYTECODE_SUFFIXES),
    ]
    sys.path_hooks.insert(0, importlib.machinery.FileFinder.path_hook(*details))
    sys.path_importer_cache.clear()


def _load(handler: str) -> Handler:
    module_name, _, attribute = handler.rpartition(".")
    function = getattr(importlib.import_module(module_name), attribute)
    if not callable(function):
        raise TypeError(f"{handler} is not callable")
    return function  # type: ignore[no-any-return]


def _memory() -> dict[str, float]:
    """Current and peak resident set size in MB (``/proc/self/status``; ``getrusage`` as fallback)."""
    fields: dict[str, float] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    return {"rss_mb": round(fields.get("VmRSS", peak), 2), "peak_rss_mb": round(fields.get("VmHWM", peak), 2)}


#: DynamoDB operations that consume write units; their keys are counted so the parent can price
#: each write by the size of the item it wrote (bench/cost.py).
_DYNAMODB_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem"})


def _count_aws_calls(calls: Counter[str], largest: dict[str, int], writes: Counter[str], reads: Counter[str]) -> None:
    """Count every AWS API call the handler makes (and its largest request), by service.operation.

    Wraps botocore's one entry point for API calls after the handler was imported (botocore is
    loaded by then); what it records is bounded by the number of distinct operations, plus one
    counter per DynamoDB item written (``writes``, by the item's ``id``) and the items read (``reads``).
    """
    import botocore.client

    base: Any = botocore.client.BaseClient
    original = base._make_api_call

    def counting(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        name = f"{client.meta.service_model.service_name}.{operation_name}"
        calls[name] += 1
        size = len(json.dumps(api_params, default=str))
        largest[name] = max(largest.get(name, 0), size)
        if operation_name == "GetItem":
            reads["items"] += 1
        elif operation_name == "BatchGetItem":
            reads["items"] += sum(len(t["Keys"]) for t in api_params.get("RequestItems", {}).values())
        if operation_name in _DYNAMODB_WRITES:
            key = api_params.get("Key") or api_params.get("Item") or {}
            writes[str(key.get("id", {}).get("S", "?"))] += 1
        return original(client, operation_name, api_params)

    base._make_api_call = counting


def _cpu_ms() -> float:
    """CPU time (user + system, every thread) this process used since it started, interpreter start-up included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round((usage.ru_utime + usage.ru_stime) * 1000, 2)


def _trace_header(sampled: bool = True) -> str:
    """A fresh X-Ray header, as the Lambda runtime sets ``_X_AMZN_TRACE_ID`` per invocation."""
    root = f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]}"
    return f"{root};Sampled={int(sampled)}"


def _status(result: Any) -> str:
    if isinstance(result, dict):
        if result.get("duplicate"):
            return "duplicate"
        return str(result.get("status", "ok"))
    return "ok"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -S bench/_lambda_child.py")
    parser.add_argument("--handler", required=True, help="module.function")
    parser.add_argument("--path", action="append", default=[], help="sys.path entry, in order (repeatable)")
    parser.add_argument("--events", required=True, help="JSON-lines file, one event per line")
    parser.add_argument("--log", required=True, help="file that receives the function's stdout and stderr")
    parser.add_argument("--timeout", type=float, default=60.0, help="the function timeout (context deadline)")
    parser.add_argument("--checkpoints", default="", help="comma-separated invocation counts to sample RSS at")
    parser.add_argument("--no-bytecode-under", action="append", default=[], help="compile modules under DIR")
    parser.add_argument("--modules", action="store_true", help="report every imported module and its file")
    parser.add_argument("--count-aws-calls", action="store_true", help="count AWS API calls by operation")
    parser.add_argument(
        "--sampled-share", type=float, default=1.0, help="share of invocations X-Ray samples (every Nth)"
    )
    parser.add_argument("--tracemalloc", default="", help="two checkpoints 'A,B': report allocation growth A→B")
    parser.add_argument(
        "--arrival-rate",
        type=float,
        default=0.0,
        help="events arrive at this mean rate per second (Poisson, seeded); 0: back to back, all at once",
    )
    args = parser.parse_args(argv)

    reply = os.fdopen(os.dup(1), "w", encoding="utf-8")
    log_fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.path[:0] = args.path
    if args.no_bytecode_under:
        _no_bytecode_under(args.no_bytecode_under)
    checkpoints = {int(n) for n in args.checkpoints.split(",") if n.strip()}
    snapshot_at = [int(n) for n in args.tracemalloc.split(",") if n.strip()]
    if snapshot_at:
        import tracemalloc

        tracemalloc.start(1)
    snapshots: list[Any] = []

    report: dict[str, Any] = {"pid": os.getpid(), "python": sys.version.split()[0]}
    before_import = time.perf_counter()
    cpu_before_import = time.process_time()
    report["startup_ms"] = round((before_import - _STARTED) * 1000, 2)
    handler = _load(args.handler)
    imported = time.perf_counter()
    report["import_ms"] = round((imported - before_import) * 1000, 2)
    report["import_cpu_ms"] = round((time.process_time() - cpu_before_import) * 1000, 2)
    report["memory_after_import"] = _memory()
    aws_calls: Counter[str] = Counter()
    aws_bytes: dict[str, int] = {}
    dynamodb_writes: Counter[str] = Counter()
    dynamodb_reads: Counter[str] = Counter()
    if args.count_aws_calls:
        _count_aws_calls(aws_calls, aws_bytes, dynamodb_writes, dynamodb_reads)

    durations: list[float] = []
    cpu: list[float] = []
    statuses: Counter[str] = Counter()
    errors: list[str] = []
    samples: dict[str, dict[str, float]] = {}
    if args.arrival_rate > 0:
        import random  # only here: the cold-start runs import nothing the handler would not

        arrivals = random.Random(14)  # the same arrival times in every run
    arrives_at = time.perf_counter()
    with open(args.events, encoding="utf-8") as events:
        for count, line in enumerate(events, start=1):
            event = json.loads(line)
            if args.arrival_rate > 0:  # wait for the event's arrival; a late one is handled at once
                arrives_at += arrivals.expovariate(args.arrival_rate)
                time.sleep(max(0.0, arrives_at - time.perf_counter()))
            # Sampled evenly: invocation n is sampled when the running share falls below the target.
            sampled = int(count * args.sampled_share) > int((count - 1) * args.sampled_share)
            os.environ["_X_AMZN_TRACE_ID"] = _trace_header(sampled)
            context = Context(args.timeout)
            started = time.perf_counter()
            cpu_started = time.process_time()
            try:
                result = handler(event, context)
                statuses[_status(result)] += 1
            except Exception as exc:  # noqa: BLE001 - the runtime reports any error; so do we
                statuses["error"] += 1
                if len(errors) < 5:
                    errors.append("".join(traceback.format_exception_only(exc)).strip()[:500])
            durations.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - cpu_started) * 1000)
            if count == 1:
                report["first_invoke_ms"] = round(durations[0], 2)
                report["to_first_result_ms"] = round((time.perf_counter() - _STARTED) * 1000, 2)
                report["cpu_to_first_result_ms"] = _cpu_ms()
            if count in checkpoints:
                gc.collect()
                samples[str(count)] = {**_memory(), "gc_objects": len(gc.get_objects())}
            if count in snapshot_at:
                import tracemalloc

                snapshots.append(tracemalloc.take_snapshot())
    report.update(
        invocations=len(durations),
        durations_ms=[round(d, 3) for d in durations],
        cpu_ms=[round(c, 3) for c in cpu],
        aws_calls=dict(aws_calls),
        aws_request_bytes_max=aws_bytes,
        dynamodb_writes_by_key=dict(dynamodb_writes),
        dynamodb_items_read=dynamodb_reads["items"],
        statuses=dict(statuses),
        errors=errors,
        memory=samples,
        memory_at_end=_memory(),
    )
    if len(snapshots) == 2:
        growth = snapshots[1].compare_to(snapshots[0], "lineno")[:15]
        report["allocation_growth"] = [str(stat) for stat in growth]
    if args.modules:
        report["modules"] = {
            name: getattr(module, "__file__", None) for name, module in sorted(sys.modules.items()) if module
        }
    reply.write(json.dumps(report) + "\n")
    reply.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
