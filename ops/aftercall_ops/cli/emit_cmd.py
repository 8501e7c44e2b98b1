"""``aftercall emit``: its options and its output (the logic is in operations/emit)."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from aftercall_ops.cli import common as ui
from aftercall_ops.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    CommandExit,
    JsonOption,
    ProfileOption,
    RegionOption,
    StackOption,
    columns,
    errors,
    progress,
    resolve,
    short,
)
from aftercall_ops.operations import emit as emit_logic
from aftercall_ops.operations import vendor_import
from aftercall_ops.operations.targets import Aws, Target


class Environment(StrEnum):
    sandbox = "sandbox"
    live = "live"


def emit(
    ctx: typer.Context,
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            help="JSON files: one event envelope, one detail, or a list of either (.jsonl/.ndjson: one per "
            "line). Use - for JSON lines on standard input, which is also read when nothing else is given.",
            show_default=False,
        ),
    ] = None,
    generate: Annotated[
        int | None,
        typer.Option(
            "--generate",
            min=1,
            max=100_000,
            help="Emit N realistic synthetic conversations.",
            rich_help_panel="Synthetic events",
        ),
    ] = None,
    duplicates: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="With --generate: share (0..1) re-emitted as duplicates.",
            rich_help_panel="Synthetic events",
        ),
    ] = 0.0,
    invalid: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="With --generate: share (0..1) with a defect the contract refuses.",
            rich_help_panel="Synthetic events",
        ),
    ] = 0.0,
    seed: Annotated[
        int | None,
        typer.Option(help="With --generate: random seed, for repeatable runs.", rich_help_panel="Synthetic events"),
    ] = None,
    from_platform: Annotated[
        vendor_import.VendorPlatform | None,
        typer.Option(
            "--from",
            help="The files hold payloads saved from this platform (its webhooks, or Connect contact events): "
            "map each to a Conversation Ended detail exactly as ingest does (docs/ingest.md).",
            rich_help_panel="Vendor payloads",
        ),
    ] = None,
    stack: StackOption = None,
    bus: Annotated[
        str | None, typer.Option(help="Event bus name or ARN (instead of --stack).", rich_help_panel="Target")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="The events' source. Default: the stack's EventSource output, else the event's own, "
            "else aftercall.platform.",
            rich_help_panel="Target",
        ),
    ] = None,
    environment: Annotated[
        Environment | None,
        typer.Option(
            help="Set detail.environment where missing and refuse events for another environment. "
            "Default: the stack's Stage.",
            rich_help_panel="Target",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read and check everything, send nothing.")] = False,
    validate: Annotated[
        bool, typer.Option("--validate", help="Also refuse details the End function would reject (schema check).")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=32, help="PutEvents calls in flight at once.")] = 4,
    as_json: JsonOption = False,
    region: RegionOption = None,
    profile: ProfileOption = None,
) -> None:
    """Put **Conversation Ended** events on the bus: from files, standard input, or --generate.

    Events are checked before anything is sent (valid JSON, detail-type, environment, EventBridge's
    256 KB entry limit as AWS computes it), then sent in PutEvents batches of at most 10. Entries that
    come back in FailedEntries are retried with backoff; every entry still not accepted is listed
    and the exit code is 1.
    """
    with errors(as_json):
        paths = list(files or [])
        if (duplicates or invalid or seed is not None) and generate is None:
            raise CommandExit("--duplicates, --invalid and --seed only apply with --generate N", EXIT_USAGE)
        if duplicates + invalid > 1.0:
            raise CommandExit(f"--duplicates + --invalid must not exceed 1 (got {duplicates + invalid:g})", EXIT_USAGE)
        read_stdin = any(str(path) == "-" for path in paths)
        if not paths and generate is None:
            if sys.stdin is None or sys.stdin.isatty():
                raise CommandExit(
                    "nothing to emit: pass JSON files, - for JSON lines on stdin, or --generate N", EXIT_USAGE
                )
            read_stdin = True
        aws = Aws(region=region, profile=profile, max_pool_connections=concurrency + 2)
        target = resolve(ctx, aws, stack, bus=bus, offline=dry_run)
        bus_name = target.require_bus()
        env = environment.value if environment else target.stage
        items: list[emit_logic.RawItem] = []
        for path in paths:
            if str(path) != "-":
                items.extend(emit_logic.read_file(path))
        if read_stdin:
            items.extend(emit_logic.read_stream(sys.stdin))
        if from_platform is not None:
            imported = vendor_import.convert(from_platform.value, items, env)
            for note in imported.skipped:
                ui.err.print(f"[yellow]{escape(note)}[/]")
            items = imported.items
        if generate is not None:
            items.extend(
                emit_logic.generated(
                    generate, seed=seed, duplicates=duplicates, invalid=invalid, environment=env or "sandbox"
                )
            )
        if not items:
            raise CommandExit("nothing to emit: the inputs hold no events", EXIT_USAGE)
        entries = emit_logic.prepare(
            items, bus=bus_name, source=source or target.event_source, environment=env, validate=validate
        )
        if dry_run:
            report = emit_logic.dry_run(entries)
        else:
            client = aws.client("events", max_attempts=1, read_timeout=20)
            with progress("emitting", len(entries), not as_json) as tick:
                report = emit_logic.send(client, entries, concurrency=concurrency, progress=tick)
        _print_emit(report, target, bus_name, as_json)
        if not report.ok:
            raise typer.Exit(EXIT_FAILED)


def _print_emit(report: emit_logic.EmitReport, target: Target, bus: str, as_json: bool) -> None:
    if as_json:
        ui.out.print_json(json.dumps({**report.to_json(), "bus": bus, "stack": target.stack_name}))
        return
    if report.dry_run:
        ui.out.print(
            f"[bold]dry run[/]: {report.total} event(s) checked, would be sent to bus [bold]{escape(bus)}[/] in "
            f"{report.batches} PutEvents call(s); largest entry {report.largest_entry_bytes:,} bytes. Nothing sent."
        )
        return
    colour = "green" if report.ok else "red"
    ui.out.print(
        f"[{colour}]{report.accepted} of {report.total} event(s) accepted[/] by bus [bold]{escape(bus)}[/] "
        f"({report.api_calls} PutEvents call(s), {report.retried_entries} entr(y/ies) retried, "
        f"{report.seconds:.2f}s)"
    )
    if report.failures:
        table = Table(title=f"{len(report.failures)} event(s) NOT accepted", title_style="bold red")
        columns(table, ("origin", "conversation", "error", "attempts"), flexible=("origin", "error"))
        for failure in report.failures:
            table.add_row(
                escape(failure.origin),
                escape(failure.conversation_id or "?"),
                escape(short(f"{failure.error_code}: {failure.error_message}", 80)),
                str(failure.attempts),
            )
        ui.out.print(table)
