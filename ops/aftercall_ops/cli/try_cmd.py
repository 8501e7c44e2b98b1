"""``aftercall try``: the command and its output (the logic is in operations/try_function.py)."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from aftercall.settings import CRM_PROVIDERS
from aftercall.testing import PlannedAction
from aftercall_ops.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from aftercall_ops.operations.emit import EmitInputError, RawItem, read_file, read_stream
from aftercall_ops.operations.try_function import (
    DEFAULT_FUNCTION,
    FunctionLoadError,
    TryReport,
    load_function,
    try_events,
)
from aftercall_ops.operations.vendor_import import VendorPlatform


def try_command(
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            help="JSON files: event envelopes or details (a list of them, or .jsonl one per line). "
            "- or nothing reads JSON lines on standard input.",
            show_default=False,
        ),
    ] = None,
    function: Annotated[
        str, typer.Option("--function", help="The End function to run, as path/to/file.py:name.")
    ] = DEFAULT_FUNCTION,
    from_platform: Annotated[
        VendorPlatform | None,
        typer.Option("--from", help="The files hold this platform's webhook payloads: map them as ingest does."),
    ] = None,
    environment: Annotated[
        str, typer.Option(help="With --from: the environment the mapped events carry (sandbox or live).")
    ] = "sandbox",
    crm: Annotated[str, typer.Option(help=f"Whose requests to show: {', '.join(CRM_PROVIDERS)}.")] = "hubspot",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Run your End function on events with no AWS, no stack and no CRM, and show what it would do.

    Each event is validated as the EndHandler validates it; your function plans its actions; the
    real CRM adapter then makes its requests against a recording (nothing is sent). Shows each
    request (method, path, body with phone numbers and emails masked), the follow-up schedule and
    the notification text. Exit code 0 when every event planned cleanly, 1 otherwise.
    """
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if crm not in CRM_PROVIDERS:
        err.print(f"[bold red]error:[/] --crm must be one of {', '.join(CRM_PROVIDERS)}, not {crm!r}")
        raise typer.Exit(EXIT_USAGE)
    if environment not in ("sandbox", "live"):
        err.print(f"[bold red]error:[/] --environment must be sandbox or live, not {environment!r}")
        raise typer.Exit(EXIT_USAGE)
    try:
        items = _read(files or [])
        end_function, user_file = load_function(function)
    except (EmitInputError, FunctionLoadError) as exc:
        if as_json:
            out.print_json(json.dumps({"ok": False, "error": str(exc), "exit_code": EXIT_USAGE}))
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_USAGE) from None
    except Exception as exc:  # noqa: BLE001 - the user's file failed to import: their code, their traceback
        err.print(f"[bold red]{escape(function)} could not be loaded:[/]")
        err.print(escape("".join(traceback.format_exception(exc))))
        raise typer.Exit(EXIT_FAILED) from None
    report = try_events(
        items,
        end_function,
        function_name=function,
        user_file=user_file,
        crm=crm,
        platform=from_platform.value if from_platform else None,
        environment=environment,
    )
    if as_json:
        out.print_json(json.dumps(report.to_json()))
    else:
        _print(out, report)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)


def _read(files: list[Path]) -> list[RawItem]:
    if not files or [str(f) for f in files] == ["-"]:
        return read_stream(sys.stdin)
    items: list[RawItem] = []
    problems: list[str] = []
    for path in files:
        try:
            items.extend(read_stream(sys.stdin) if str(path) == "-" else read_file(path))
        except EmitInputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise EmitInputError(problems)
    return items


_MARKS = {
    "planned": "[green]✓ planned[/]",
    "skipped": "[dim]- skipped[/]",
    "invalid": "[bold red]✗ invalid event[/]",
    "raised": "[bold red]✗ end_function raised[/]",
    "actions_failed": "[bold red]✗ an action failed[/]",
}


def _print(out: Console, report: TryReport) -> None:
    for result in report.results:
        label = f" {escape(result.conversation_id)}" if result.conversation_id else ""
        out.print(
            f"[bold]{escape(result.origin)}[/]{label}  {_MARKS[result.outcome]}  [dim]{result.seconds * 1000:.0f} ms[/]"
        )
        if result.error and result.outcome != "raised":
            out.print(f"  {escape(result.error)}")
        if result.traceback:
            out.print(escape(result.traceback.rstrip()), style="red")
        for action in result.plan or ():
            _print_action(out, action)
        out.print()
    planned = sum(1 for r in report.results if r.ok)
    colour = "green" if report.ok else "bold red"
    out.print(
        f"[{colour}]{planned} of {len(report.results)} event(s) planned cleanly[/] "
        f"[dim](End function {escape(report.function)}, {report.crm} requests recorded, nothing sent)[/]"
    )


def _print_action(out: Console, action: PlannedAction) -> None:
    shown = action.to_json(masked=True)
    status = "[red]failed[/]" if action.error else "[green]ok[/]"
    out.print(f"  [bold cyan]{escape(action.name)}[/] {status}")
    for request in shown["requests"]:
        query = "?" + "&".join(f"{k}={v}" for k, v in request["query"].items()) if request["query"] else ""
        out.print(f"    {request['method']} {escape(request['path'] + query)} [dim]→ {request['status']}[/]")
        if request["body"] is not None:
            out.print(f"      {escape(_compact(request['body']))}", style="dim")
    for call in shown["aws_calls"]:
        _print_aws_call(out, call)
    if action.error is not None:
        out.print(f"    [red]{escape(shown['error'])}[/]")
    elif shown["result"] is not None:
        out.print(f"    [dim]result: {escape(_compact(shown['result']))}[/]")


def _print_aws_call(out: Console, call: dict[str, Any]) -> None:
    params = call["params"]
    if call["operation"] == "CreateSchedule":
        target = params.get("Target", {})
        payload = target.get("Input", {})
        name, expression = escape(str(params.get("Name"))), escape(str(params.get("ScheduleExpression")))
        zone, after = params.get("ScheduleExpressionTimezone", ""), params.get("ActionAfterCompletion", "").lower()
        out.print(f"    Scheduler CreateSchedule {name} {expression} {zone}, then {after}")
        if isinstance(payload, dict):
            to, message = escape(str(payload.get("to"))), escape(str(payload.get("message")))
            out.print(f"      {payload.get('kind')} to {to}: {message}", style="dim")
    elif call["operation"] == "Publish":
        out.print(f"    SNS Publish, subject: {escape(str(params.get('Subject')))}")
        for line in str(params.get("Message", "")).rstrip().splitlines():
            out.print(f"      {escape(line)}", style="dim")
    else:
        out.print(f"    {call['service']} {call['operation']} {escape(_compact(params))}")


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
