"""``aftercall chaos``: the chaos run's options and its summary (the run is operations/chaos)."""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated, Any

import typer

from aftercall_ops.cli.common import EXIT_FAILED, EXIT_OK


def chaos(
    n: Annotated[int, typer.Option("--n", min=1, help="Conversations.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed for the conversations and the faults.")] = 2026,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Execution environments.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """N conversations through the local stack while the CRM, the credentials and Lambda fail; then one replay,
    and a count of every conversation's effects. Exit code 0 when nothing was lost or done twice."""
    from aftercall_ops.operations.chaos import ChaosConfig, run  # loads the emulator

    # The dispatcher narrates every failed attempt; the run counts them instead.
    logging.getLogger("aftercall_ops.emulator").setLevel(logging.CRITICAL)
    report = run(
        ChaosConfig(conversations=n, seed=seed, workers=workers),
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    summary = report.to_json()
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary, report.ok)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)


def print_summary(summary: dict[str, Any], ok: bool) -> None:
    """The run in a dozen lines (also ``bench/chaos.py``'s text output)."""
    faults = ", ".join(f"{kind} {count}" for kind, count in summary["faults_injected"].items())
    print(
        f"chaos: {summary['conversations']} conversations, {summary['events_emitted']} events "
        f"({summary['duplicate_emissions']} emitted twice, {summary['concurrent_duplicate_emissions']} of them "
        f"concurrently) in {summary['seconds']:.0f} s"
    )
    print(
        f"  CRM: {summary['crm_requests_under_faults']} requests while failing, {summary['fault_share']:.0%} failed "
        f"({faults})"
    )
    print(
        f"  Lambda: {summary['invocations']} invocations, {summary['timeouts']} stopped at the deadline, "
        f"{summary['dispatcher']['failed_attempts']} failed attempts, {summary['dlq_before_replay']} in the "
        f"failed-events queue before the replay"
    )
    for checkpoint in summary["checkpoints"]:
        print(
            f"  checkpoint {checkpoint['label']}: emitted {checkpoint['emitted']} = processed "
            f"{checkpoint['processed']} | queue {checkpoint['in_dlq']} | in flight {checkpoint['in_flight']}, "
            f"missing {checkpoint['missing']}"
        )
    print(f"  replay: {summary['replay']}")
    print(f"  effects: {summary['effects']} (asked for: {summary['expected_effects']})")
    print(
        f"  duplicates {summary['duplicates']}, lost {summary['lost']}, failed-events queue after the replay "
        f"{summary['dlq_after_replay']}: {'OK' if ok else 'FAILED'}"
    )
    for problem in summary["problems"]:
        print(f"  PROBLEM {problem}")
