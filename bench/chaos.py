"""Chaos run: N conversations through the local stack while the CRM, the credentials and Lambda fail.

The scenario is ``aftercall_ops.operations.chaos`` (shared with the CI-sized ``tests/system/test_chaos.py``): N
generated conversations (default 2,000), 20% emitted twice (half of those in the same PutEvents
batch as the original, so the copies run concurrently); the fake HubSpot failing about 30% of
requests (429 with Retry-After, 500, hangs past the client's read timeout that are applied
later, reset connections, 500 after the write was applied, answers that trickle in until Lambda
stops the invocation at its deadline); the CRM token rotated midway and the secret a few seconds
later; checkpoints that account for every emitted conversation; the CRM recovers; one
``aftercall replay`` pass; then every conversation's effects counted against what the default End
function asks for.

    python bench/chaos.py [--json] [--n 2000] [--seed 2026] [--workers 8]

Prints a summary (or, with ``--json``, one object with ``conversations``, ``duplicates``,
``lost``, ``dlq_after_replay``, ``seconds``, ``faults_injected``, ``invocations``, ``timeouts``,
the checkpoints and the effects). Exits 1 when anything was duplicated, lost or left in the queue.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in ("layers/aftercall", "ops"):
    if str(REPO / _path) not in sys.path:
        sys.path.insert(0, str(REPO / _path))

from aftercall_ops.cli.chaos_cmd import print_summary  # noqa: E402 - after the path setup
from aftercall_ops.operations.chaos import ChaosConfig, run  # noqa: E402


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--n", type=int, default=2000, help="conversations (default 2000)")
    parser.add_argument("--seed", type=int, default=2026, help="seed for the conversations and the faults")
    parser.add_argument("--workers", type=int, default=8, help="execution environments (default 8)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    # The dispatcher narrates every failed attempt; the run counts them instead.
    logging.getLogger("aftercall_ops.emulator").setLevel(logging.CRITICAL)
    config = ChaosConfig(conversations=args.n, seed=args.seed, workers=args.workers)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = run(config, progress=progress)
    summary = {**report.to_json(), "machine": machine()}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0 if report.ok else 1
    print_summary(summary, report.ok)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
