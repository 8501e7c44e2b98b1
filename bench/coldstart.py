"""Benchmark: cold start of the End function against a bare boto3 handler, side by side in one run.

Every run is a FRESH PROCESS (``bench/_lambda_child.py``, started with ``python -S``) that imports
a handler and processes one event on the local stack (moto server and fake HubSpot on loopback,
started here; the environment is the template's, with ``AWS_ENDPOINT_URL`` pointing at moto and
tracing on as with ``Tracing: Active``):

* ``ours``: ``functions/end_handler/app.py`` with the seed End function, on one unresolved support
  call (idempotency record, CRM secret, contact search, a note and a ticket, two ledger entries);
* ``ours_traced``: ours again on an invocation X-Ray samples (the template's sampling rule records
  ``TraceSamplingRate`` of them, 5% by default; ``ours`` is an unsampled one, as most are): the
  Tracer is built, the X-Ray SDK imported and botocore and requests patched;
* ``baseline``: ``bench/_baseline_handler.py``, which imports boto3, makes a DynamoDB client and
  does one ``put_item``;
* ``ours_uncompiled``: ours again, but every module of the layer (its requirement closure, botocore
  included, and the ``aftercall`` package) compiles from source and never uses ``__pycache__``.
  That is how a layer built with ``BuildMethod: python3.13`` runs on Lambda: the builder ships no
  ``.pyc`` files, ``/opt`` is read-only, and aws-xray-sdk drags its own botocore into the layer,
  which shadows the runtime's. The layer's Makefile fixes both (see docs/performance.md).

The variants alternate (their order rotates every round) after one untimed warm-up each; the
parent times each process from spawn to its report (``wall``), the child reports its own
``perf_counter`` deltas for the import and the first invocation. Medians are printed, with the
ratio to the baseline. Nothing here asserts a speed; the target (at most 1.25x the baseline) is
reported as met or missed.

    python bench/coldstart.py [--runs 7] [--json] [--profile-imports] [--no-uncompiled] [--compare DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _lambda_stack import (
    BENCH_DIR,
    FUNCTION_DIR,
    LAYER_DIR,
    BenchStack,
    ChildRun,
    machine,
    median,
    requirement_closure,
    run_child,
    site_dirs,
    support_events,
    top_level_paths,
    write_events,
)

TARGET_RATIO = 1.25
PROFILE_RUNS = 3
OURS = "app.lambda_handler"
BASELINE = "_baseline_handler.lambda_handler"
EXPECTED = {"ours": "processed", "ours_traced": "processed", "ours_uncompiled": "processed", "baseline": "stored"}


def layer_sources() -> list[str]:
    """Where the layer's modules live in this environment: the aftercall package and its requirements."""
    paths = [str(LAYER_DIR / "aftercall")]
    for distribution in requirement_closure():
        paths += top_level_paths(distribution)
    return paths


def summarise(runs: Sequence[ChildRun]) -> dict[str, Any]:
    return {
        "wall_ms": round(median([r.wall_ms for r in runs]), 1),
        "startup_ms": round(median([r.report["startup_ms"] for r in runs]), 1),
        "import_ms": round(median([r.report["import_ms"] for r in runs]), 1),
        "first_invoke_ms": round(median([r.report["first_invoke_ms"] for r in runs]), 1),
        "cpu_ms": round(median([r.report["cpu_to_first_result_ms"] for r in runs]), 1),
        "runs_wall_ms": [round(r.wall_ms, 1) for r in runs],
    }


def import_profile(log_text: str) -> dict[str, float]:
    """Self time of ``-X importtime`` lines summed by top-level package (ms)."""
    totals: dict[str, float] = {}
    for line in log_text.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s+(\S+)", line)
        if match:
            package = match[2].split(".")[0]
            totals[package] = totals.get(package, 0.0) + int(match[1]) / 1000
    return totals


def median_profile(profiles: Sequence[dict[str, float]], top: int = 15) -> list[tuple[str, float]]:
    """Per package, the median over the profiled runs; the ``top`` largest."""
    packages = {name for profile in profiles for name in profile}
    medians = {name: median([profile.get(name, 0.0) for profile in profiles]) for name in packages}
    ranked = sorted(medians.items(), key=lambda item: item[1], reverse=True)[:top]
    return [(name, round(ms, 1)) for name, ms in ranked]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7, help="timed runs per variant (default 7)")
    parser.add_argument("--seed", type=int, default=6, help="seed of the generated conversations")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--profile-imports", action="store_true", help=f"{PROFILE_RUNS} more runs of ours with -X importtime"
    )
    parser.add_argument("--no-uncompiled", action="store_true", help="skip the layer-without-bytecode variant")
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="DIR",
        help="also time another copy of the runtime, DIR/functions/end_handler + DIR/layers/aftercall "
        "(e.g. git archive <commit> functions layers | tar -x -C DIR): before/after a change, side by side",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 50:
        parser.error("--runs must be between 1 and 50")
    if args.compare and not (args.compare / "layers" / "aftercall" / "aftercall").is_dir():
        parser.error(f"--compare {args.compare}: no layers/aftercall/aftercall under it")

    variants = ["ours", "baseline", "ours_traced"] + ([] if args.no_uncompiled else ["ours_uncompiled"])
    site = site_dirs()
    paths = {
        "ours": [str(FUNCTION_DIR), str(LAYER_DIR), *site],
        "ours_traced": [str(FUNCTION_DIR), str(LAYER_DIR), *site],
        "ours_uncompiled": [str(FUNCTION_DIR), str(LAYER_DIR), *site],
        "baseline": [str(BENCH_DIR), *site],
    }
    # X-Ray samples a cold start as any invocation: at the template's rate (TraceSamplingRate), so
    # "ours" is the unsampled one, as most are; "ours_traced" shows what a sampled one costs.
    unsampled = "--sampled-share=0"
    extra = {
        "ours": [unsampled],
        "ours_traced": [],
        "baseline": [unsampled],
        "ours_uncompiled": [unsampled, *(f"--no-bytecode-under={p}" for p in layer_sources())],
    }
    handlers = {"ours": OURS, "ours_traced": OURS, "ours_uncompiled": OURS, "baseline": BASELINE}
    expected = dict(EXPECTED)
    if args.compare:
        variants.append("compare")
        code = args.compare.resolve()
        paths["compare"] = [str(code / "functions" / "end_handler"), str(code / "layers" / "aftercall"), *site]
        extra["compare"], handlers["compare"], expected["compare"] = [unsampled], OURS, "processed"
    results: dict[str, list[ChildRun]] = {name: [] for name in variants}
    profile: list[tuple[str, float]] = []

    with BenchStack() as stack, tempfile.TemporaryDirectory(prefix="aftercall-coldstart-") as tmp:
        env = stack.lambda_env()
        events = iter(support_events((args.runs + 1) * len(variants) + PROFILE_RUNS, seed=args.seed))

        def one(variant: str, label: str, *, flags: Sequence[str] = (), keep_log: bool = False) -> ChildRun:
            events_file = write_events(Path(tmp) / f"{label}.jsonl", [next(events)])
            run = run_child(
                handlers[variant],
                paths[variant],
                events_file,
                {**env, "LAMBDA_TASK_ROOT": paths[variant][0]},
                extra=extra[variant],
                python_flags=flags,
                function_timeout_s=stack.timeout_s,
                keep_log=keep_log,
            )
            statuses = run.report["statuses"]
            if statuses != {expected[variant]: 1}:
                raise RuntimeError(f"{variant} did not process its event: {statuses} {run.report['errors']}")
            return run

        for variant in variants:  # untimed: bytecode caches written, files in the page cache
            one(variant, f"warmup-{variant}")
        for round_index in range(args.runs):
            shift = round_index % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                results[variant].append(one(variant, f"{variant}-{round_index}"))
                if not args.json:
                    print(f"  run {round_index + 1}: {variant:<16} {results[variant][-1].wall_ms:8.1f} ms", flush=True)
        if args.profile_imports:
            profiles = [
                import_profile(one("ours", f"profile-{n}", flags=["-X", "importtime"], keep_log=True).log_text)
                for n in range(PROFILE_RUNS)
            ]
            profile = median_profile(profiles)

    summary = {name: summarise(runs) for name, runs in results.items()}

    def paired(name: str, metric: str = "wall") -> float:
        """Median over rounds of variant/baseline within the round: steadier when the machine's load drifts."""
        values = [
            (run.wall_ms / base.wall_ms)
            if metric == "wall"
            else (run.report["cpu_to_first_result_ms"] / base.report["cpu_to_first_result_ms"])
            for run, base in zip(results[name], results["baseline"], strict=True)
        ]
        return round(median(values), 2)

    ours, baseline = summary["ours"]["wall_ms"], summary["baseline"]["wall_ms"]
    output: dict[str, Any] = {
        "benchmark": "coldstart",
        "runs": args.runs,
        "ours_ms": ours,
        "baseline_ms": baseline,
        "ratio": round(ours / baseline, 2),
        "target_ratio": TARGET_RATIO,
        "target_met": ours / baseline <= TARGET_RATIO,
        "ratio_paired": paired("ours"),
        "cpu_ratio": round(summary["ours"]["cpu_ms"] / summary["baseline"]["cpu_ms"], 2),
        "cpu_ratio_paired": paired("ours", "cpu"),
        "import_ms": {name: s["import_ms"] for name, s in summary.items()},
        "first_invoke_ms": {name: s["first_invoke_ms"] for name, s in summary.items()},
        "ratio_traced": round(summary["ours_traced"]["wall_ms"] / baseline, 2),
        "cpu_ratio_traced": round(summary["ours_traced"]["cpu_ms"] / summary["baseline"]["cpu_ms"], 2),
        "variants": summary,
        "memory_size_mb": stack.memory_mb,
        "machine": machine(),
    }
    if "compare" in summary:
        output["compare_ms"] = summary["compare"]["wall_ms"]
        output["ratio_compare"] = round(summary["compare"]["wall_ms"] / baseline, 2)
        output["cpu_ratio_compare"] = round(summary["compare"]["cpu_ms"] / summary["baseline"]["cpu_ms"], 2)
        output["ratio_compare_paired"] = paired("compare")
    if "ours_uncompiled" in summary:
        output["ours_uncompiled_ms"] = summary["ours_uncompiled"]["wall_ms"]
        output["ratio_uncompiled"] = round(summary["ours_uncompiled"]["wall_ms"] / baseline, 2)
        output["cpu_ratio_uncompiled"] = round(summary["ours_uncompiled"]["cpu_ms"] / summary["baseline"]["cpu_ms"], 2)
    if profile:
        output["import_profile_ms"] = dict(profile)

    if args.json:
        print(json.dumps(output))
        return 0
    print(f"\ncold start, median of {args.runs} fresh processes each (spawn → handler result):")
    print(
        f"  {'variant':<16} {'wall':>9} {'startup':>9} {'import':>9} {'1st invoke':>11} {'vs baseline':>11} {'CPU':>9}"
    )
    for name, s in summary.items():
        print(
            f"  {name:<16} {s['wall_ms']:>7.1f}ms {s['startup_ms']:>7.1f}ms {s['import_ms']:>7.1f}ms "
            f"{s['first_invoke_ms']:>9.1f}ms {s['wall_ms'] / baseline:>10.2f}x {s['cpu_ms']:>7.1f}ms"
        )
    verdict = "met" if output["target_met"] else "MISSED"
    print(
        f"ratio ours/baseline: {output['ratio']:.2f} (target ≤ {TARGET_RATIO:.1f}: {verdict}); "
        f"median of the per-round ratios: {output['ratio_paired']:.2f}"
    )
    print(
        f"CPU time ours/baseline (user+system, spawn to result; steadier on a busy machine): "
        f"{output['cpu_ratio']:.2f}, per round {output['cpu_ratio_paired']:.2f}"
    )
    if "compare" in summary:
        print(
            f"compare ({args.compare}): {output['ratio_compare']:.2f}x the baseline's wall time "
            f"(per round {output['ratio_compare_paired']:.2f}), {output['cpu_ratio_compare']:.2f}x its CPU time"
        )
    if profile:
        print(f"import self time by top-level package (median of {PROFILE_RUNS} -X importtime runs of ours):")
        for name, ms in profile:
            print(f"  {name:<28} {ms:7.1f} ms")
    m = output["machine"]
    print(f"machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}, load {m['load_average']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
