"""``aftercall replay``: its options and its output (the logic is in operations/replay)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

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
    progress,
    resolve,
    short,
)
from aftercall_ops.operations import replay as replay_logic
from aftercall_ops.operations.targets import DEFAULT_FUNCTION_TIMEOUT, Aws, Target


class ReplayMode(StrEnum):
    invoke = "invoke"
    put_events = "put-events"


def replay(
    ctx: typer.Context,
    mode: Annotated[
        ReplayMode,
        typer.Option(
            help="invoke: call the End function directly and wait for its answer (reaches only our function; "
            "the event keeps its id). put-events: put the event back on the bus (new event id; every rule on "
            "the bus sees it again).",
            case_sensitive=False,
        ),
    ] = ReplayMode.invoke,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be replayed (and why not); change nothing.")
    ] = False,
    conversation_id: Annotated[
        list[str] | None,
        typer.Option(
            "--conversation-id",
            help="Only these conversations (repeat the option for several).",
            rich_help_panel="Filters",
        ),
    ] = None,
    error_contains: Annotated[
        str | None,
        typer.Option(
            help="Only messages whose error contains this text (case-insensitive).", rich_help_panel="Filters"
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Hand back at most N messages.", rich_help_panel="Filters")
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Hand-backs in flight at once (invoke: keep it at or below the function's reserved concurrency).",
            rich_help_panel="Pace",
        ),
    ] = 4,
    rate: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="At most this many hand-backs per second (spare a recovering CRM).", rich_help_panel="Pace"
        ),
    ] = None,
    visibility_timeout: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=43200,
            help="Seconds a received message stays hidden from others during the pass "
            "(default: 300; invoke: at least the function timeout + 60). If the replay dies, undeleted "
            "messages reappear after this.",
            rich_help_panel="Pace",
        ),
    ] = None,
    max_seconds: Annotated[
        float, typer.Option(min=1.0, help="Stop the pass after this long.", rich_help_panel="Pace")
    ] = 3600.0,
    stack: StackOption = None,
    queue_url: Annotated[
        str | None, typer.Option(help="Failed-events queue URL (instead of --stack).", rich_help_panel="Target")
    ] = None,
    bus: Annotated[
        str | None, typer.Option(help="put-events mode: the bus (instead of --stack).", rich_help_panel="Target")
    ] = None,
    function: Annotated[
        str | None,
        typer.Option(help="invoke mode: the function name or ARN (instead of --stack).", rich_help_panel="Target"),
    ] = None,
    function_timeout: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=900,
            help="invoke mode: the function's timeout in seconds (default: the stack's "
            "EndHandlerTimeoutSeconds output, else 900). The invoke waits longer than this.",
            rich_help_panel="Target",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List every message, not only problems.")] = False,
    as_json: JsonOption = False,
    region: RegionOption = None,
    profile: ProfileOption = None,
) -> None:
    """Bring failed events back: one pass over the failed-events queue.

    --mode invoke calls the End function directly and waits for its answer: the event keeps its id and
    only our function sees it. --mode put-events puts the event back on the bus: it gets a new event id
    and every rule on the bus sees it again (other consumers too).

    Recognises the three message shapes (EventBridge target DLQ, Lambda OnFailure record, legacy
    Lambda DLQ) and says which it saw. A message is deleted only after its event was handed back
    successfully; one that fails again stays in the queue and is reported; an unrecognised one is
    reported and left alone. Safe to interrupt: nothing is deleted before its hand-back succeeded.
    Ends with a summary: replayed, failed again, skipped, unrecognised (exit 1 if any failed again
    or was unrecognised).
    """
    with errors(as_json):
        aws = Aws(region=region, profile=profile, max_pool_connections=concurrency + 4)
        target = resolve(ctx, aws, stack, bus=bus, queue_url=queue_url, function=function)
        queue = target.require_queue_url()
        timeout = function_timeout or target.function_timeout_seconds or DEFAULT_FUNCTION_TIMEOUT
        options = replay_logic.ReplayOptions(
            mode="invoke" if mode is ReplayMode.invoke else "put-events",
            dry_run=dry_run,
            conversation_ids=frozenset(conversation_id or ()),
            error_contains=error_contains,
            limit=limit,
            concurrency=concurrency,
            rate=rate,
            visibility_timeout=visibility_timeout,
            max_seconds=max_seconds,
            function_timeout=timeout,
            event_source=target.event_source,
            end_function=function is None,  # --stack names the End function; --function may name another
        )
        options.check()
        kwargs: dict[str, Any] = {}
        if not dry_run and options.mode == "put-events":
            kwargs.update(events=aws.client("events", max_attempts=1, read_timeout=20), bus=target.require_bus())
        elif not dry_run:
            kwargs.update(
                lambda_client=replay_logic.invoke_client(aws, options),
                function=target.require_function(),
            )
        sqs = aws.client("sqs", read_timeout=30)
        depth, _ = replay_logic.queue_depth(sqs, queue)
        with progress("replaying" if not dry_run else "listing", depth or None, not as_json) as tick:
            report = replay_logic.replay(sqs, queue, options, progress=tick, **kwargs)
        _print_replay(report, target, as_json, verbose)
        if not report.ok:
            raise typer.Exit(EXIT_FAILED)


_ACTION_STYLE = {
    "replayed": "green",
    "would-replay": "cyan",
    "failed-again": "bold red",
    "unrecognised": "bold yellow",
    "skipped": "dim",
}


def _print_replay(report: replay_logic.ReplayReport, target: Target, as_json: bool, verbose: bool) -> None:
    if as_json:
        ui.out.print_json(json.dumps({**report.to_json(), "stack": target.stack_name}))
        return
    show_all = verbose or report.dry_run or len(report.outcomes) <= 50
    rows = [o for o in report.outcomes if show_all or o.action in ("failed-again", "unrecognised")]
    if rows:
        title = "dry run: nothing was changed" if report.dry_run else None
        table = Table(title=title, title_style="bold cyan")
        columns(table, ("conversation", "shape", "age", "outcome", "error"), flexible=("outcome", "error"))
        for outcome in rows:
            style = _ACTION_STYLE.get(outcome.action, "")
            detail = f": {escape(short(outcome.detail, 70))}" if outcome.detail else ""
            table.add_row(
                escape(outcome.conversation_id or f"(message {outcome.message_id[:8]})"),
                outcome.shape,
                age(outcome.age_seconds),
                f"[{style}]{outcome.action}[/]{detail}",
                escape(short(outcome.error, 60)),
            )
        ui.out.print(table)
    summary = report.summary()
    parts = [f"{value} {name.replace('_', ' ')}" for name, value in summary.items()]
    colour = "green" if report.ok else "red"
    ui.out.print(
        f"[{colour}]{'dry run, ' if report.dry_run else ''}{report.mode}:[/] {', '.join(parts)} "
        f"[dim]({report.depth_at_start} visible at start; {report.seconds:.2f}s; stopped: {escape(report.stopped)})[/]"
    )
    if report.count("failed-again"):
        ui.out.print(
            "[red]Messages that failed again stay in the queue (visible again now); fix the cause and re-run.[/]"
        )
    if report.count("unrecognised"):
        ui.out.print("[yellow]Unrecognised messages were left in the queue untouched; inspect them by hand.[/]")
    for failure in report.release_failures:
        ui.err.print(f"[yellow]warning:[/] {escape(failure)}")
    if report.interrupted:
        ui.err.print("[yellow]Interrupted: nothing was deleted without a successful hand-back; run again to go on.[/]")
