"""``aftercall status``: its options and its output (the logic is in operations/status.py)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from aftercall_ops.cli import common as ui
from aftercall_ops.cli.common import (
    EXIT_FAILED,
    JsonOption,
    ProfileOption,
    RegionOption,
    StackOption,
    age,
    columns,
    errors,
    resolve,
    short,
)
from aftercall_ops.operations import status as status_logic
from aftercall_ops.operations.targets import Aws, Target


def status(
    ctx: typer.Context,
    stack: StackOption = None,
    queue_url: Annotated[
        str | None, typer.Option(help="Failed-events queue URL (instead of --stack).", rich_help_panel="Target")
    ] = None,
    peek: Annotated[
        int,
        typer.Option(
            min=0,
            max=100_000,
            help="Read at most N messages for the counts (0: depth only). They are "
            "made visible again at once; nothing is deleted.",
        ),
    ] = 1000,
    recent: Annotated[int, typer.Option(min=0, max=1000, help="Show the N most recent failures.")] = 10,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 when the queue is not empty (for scripts and CI).")
    ] = False,
    as_json: JsonOption = False,
    region: RegionOption = None,
    profile: ProfileOption = None,
) -> None:
    """The failed-events queue: depth, age of the oldest message, counts by error and shape, recent failures.

    Reading a message in SQS hides it for a moment, so status peeks with a 30 s visibility timeout and
    makes every peeked message visible again right away. Nothing is deleted.
    """
    with errors(as_json):
        aws = Aws(region=region, profile=profile)
        target = resolve(ctx, aws, stack, queue_url=queue_url)
        queue = target.require_queue_url()
        report = status_logic.status(aws.client("sqs", read_timeout=30), queue, peek=peek, recent=recent)
        _print_status(report, target, as_json)
        if check and not report.empty:
            raise typer.Exit(EXIT_FAILED)


def _print_status(report: status_logic.StatusReport, target: Target, as_json: bool) -> None:
    if as_json:
        ui.out.print_json(json.dumps({**report.to_json(), "stack": target.stack_name}))
        return
    label = target.stack_name or report.queue_url
    if report.empty:
        ui.out.print(f"[green]The failed-events queue of {escape(label)} is empty.[/]")
        return
    oldest = f", oldest {age(report.oldest_age_seconds)} old" if report.oldest_age_seconds is not None else ""
    ui.out.print(
        f"[bold red]{report.depth} failed event(s)[/] in the queue of {escape(label)} "
        f"({report.visible} visible, {report.in_flight} in flight{oldest})"
    )
    if report.peeked and not report.complete:
        ui.out.print(f"[dim]Counts below cover the {report.peeked} message(s) peeked, not all of them.[/]")
    if report.by_shape:
        table = Table(title="by shape")
        table.add_column("shape")
        table.add_column("count", justify="right")
        for shape, count in report.by_shape.items():
            table.add_row(shape, str(count))
        ui.out.print(table)
    if report.by_error:
        table = Table(title="by error")
        table.add_column("error")
        table.add_column("count", justify="right")
        for error, count in report.by_error.items():
            table.add_row(escape(error), str(count))
        ui.out.print(table)
    if report.recent:
        table = Table(title="most recent failures")
        columns(table, ("conversation", "shape", "age", "attempts", "error"), flexible=("error",))
        for message in report.recent:
            table.add_row(
                escape(message.conversation_id or f"(message {message.message_id[:8]})"),
                message.shape,
                age(message.age_seconds),
                str(message.attempts) if message.attempts is not None else "",
                escape(short(message.error, 80)),
            )
        ui.out.print(table)
    for failure in report.release_failures:
        ui.err.print(f"[yellow]warning:[/] {escape(failure)}")
    ui.out.print("Replay them with: [bold]aftercall replay --dry-run[/] first, then [bold]aftercall replay[/]")
