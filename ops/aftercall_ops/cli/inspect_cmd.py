"""``aftercall inspect``: the command and its output (the logic is in operations/inspect.py)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aftercall_ops.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandExit, errors
from aftercall_ops.operations.inspect import DEFAULT_WINDOW_HOURS, Inspection, inspect
from aftercall_ops.operations.targets import Aws, resolve_target


def inspect_command(
    conversation_id: Annotated[str, typer.Argument(help="The conversation to look up (detail.conversation_id).")],
    stack: Annotated[
        str | None,
        typer.Option("--stack", envvar="AFTERCALL_STACK", help="The stack (default: $AFTERCALL_STACK)."),
    ] = None,
    hours: Annotated[
        int,
        typer.Option(min=1, max=24 * 30, help="Search the log lines of the last N hours (Logs Insights)."),
    ] = DEFAULT_WINDOW_HOURS,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    region: Annotated[str | None, typer.Option("--region", help="AWS region.")] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="AWS profile.")] = None,
) -> None:
    """One conversation's story: its idempotency record, each action with its status, attempts and CRM
    object, its follow-up schedules, failed-events messages and log lines, as one timeline.

    Exit code 0 when it was processed and every action completed; 1 when something failed, is in flight
    or nothing is known about it; 2 for bad arguments or configuration.
    """
    out = Console(highlight=False, soft_wrap=True)
    with errors(as_json):
        if not stack:
            raise CommandExit("inspect needs the stack: pass --stack NAME (or set AFTERCALL_STACK)", EXIT_USAGE)
        aws = Aws(region=region, profile=profile)
        aws.check()
        target = resolve_target(aws, stack=stack)
        found = inspect(aws, target, conversation_id, hours=hours)
    if as_json:
        out.print_json(json.dumps(found.to_json()))
    else:
        _print(out, found)
    raise typer.Exit(EXIT_OK if found.ok else EXIT_FAILED)


def _print(out: Console, found: Inspection) -> None:
    verdict = "[green]processed, every action completed[/]" if found.ok else "[bold red]needs attention[/]"
    out.print(f"[bold]{escape(found.conversation_id)}[/] in stack {escape(found.stack or '?')}: {verdict}")
    record = found.idempotency
    if record:
        out.print(f"  record: {record['status']}, kept until {record['expires_at']}")
    else:
        out.print("  record: none (not processed: a failed attempt releases it; or it expired)")
    if found.actions:
        table = Table(title="actions (ledger)", title_justify="left")
        for column in ("action", "status", "attempts", "CRM object / result"):
            table.add_column(column)
        for action in found.actions:
            colour = "green" if action.status == "COMPLETED" else "red"
            table.add_row(
                escape(action.action),
                f"[{colour}]{action.status}[/]",
                str(action.attempt),
                escape(_result(action.result) if action.error is None else action.error),
            )
        out.print(table)
    for schedule in found.schedules:
        at = f", due {schedule['at'].isoformat()}" if schedule.get("at") else ""
        out.print(f"  follow-up {escape(schedule['action'])}: {escape(schedule['name'])} {schedule['state']}{at}")
    if found.failed_events:
        out.print(f"  [red]{len(found.failed_events)} message(s) in the failed-events queue[/]")
    timeline = found.timeline()
    if timeline:
        out.print("[bold]timeline[/] [dim](UTC)[/]")
        for entry in timeline:
            style = "red" if entry.problem else ""
            line = f"  {entry.at.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}  {entry.source:<22} {escape(entry.text)}"
            out.print(line, style=style)
    for trace in found.traces:
        out.print(f"  X-Ray trace: {escape(trace)} (CloudWatch → X-Ray traces)")
    for problem in found.problems:
        out.print(f"[bold red]problem:[/] {escape(problem)}")
    for note in found.notes:
        out.print(f"[dim]note: {escape(note)}[/]")
    if found.failed_events:
        out.print(f"Replay it with: [bold]aftercall replay --conversation-id {escape(found.conversation_id)}[/]")


def _result(result: dict[str, Any] | None) -> str:
    if not result:
        return ""
    kind, object_id = result.get("kind"), result.get("object_id")
    extra = {k: v for k, v in result.items() if k not in ("kind", "object_id")}
    head = f"{kind} {object_id}" if kind and object_id else ""
    tail = ", ".join(f"{k}={v}" for k, v in extra.items())
    return f"{head} ({tail})" if head and tail else head or tail
