"""The ``aftercall`` command: emit, replay, status, local. Formatting only; the logic lives in
emit.py, replay.py, status.py and stack.py, which tests and benchmarks call directly.

Exit codes: 0 all good; 1 something failed or was not accepted (or, with ``status --check``,
the queue is not empty); 2 bad arguments or configuration (unknown stack, no credentials...).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import botocore.exceptions
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aftercall_ops.cli.inspect_cmd import inspect_command
from aftercall_ops.cli.try_cmd import try_command
from aftercall_ops.operations import emit as emit_logic
from aftercall_ops.operations import replay as replay_logic
from aftercall_ops.operations import status as status_logic
from aftercall_ops.operations import vendor_import
from aftercall_ops.operations.targets import (
    DEFAULT_FUNCTION_TIMEOUT,
    Aws,
    Target,
    TargetError,
    describe_aws_error,
    resolve_target,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

app = typer.Typer(
    name="aftercall",
    help=(
        "Operate an aftercall stack: put **Conversation Ended** events on its bus, see and replay what "
        "landed in its failed-events queue, or run the whole stack locally.\n\n"
        "Point a command at a deployed stack with **--stack NAME** (its CloudFormation outputs name the "
        "bus, queue and function) or name them yourself (**--bus**, **--queue-url**, "
        "**--function**). AWS credentials and region come from the usual places (AWS_PROFILE, "
        "AWS_REGION, ...). To try it all without AWS: run **aftercall local** in one terminal and export "
        "the environment it prints in another.\n\n"
        "Exit codes: 0 all good; 1 something failed or was not accepted; 2 bad arguments or configuration."
    ),
    epilog=(
        "Examples:\n\n"
        "  aftercall emit --stack aftercall-sandbox events/*.json\n\n"
        "  aftercall emit --stack aftercall-sandbox --generate 200 --duplicates 0.1\n\n"
        "  aftercall status --stack aftercall-sandbox\n\n"
        "  aftercall replay --stack aftercall-sandbox --dry-run\n\n"
        "  aftercall replay --stack aftercall-sandbox --mode invoke --error-contains Timeout\n\n"
        "Details and the runbook: docs/operations.md"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fresh_consoles() -> None:
    """New consoles per command, so the terminal width (or $COLUMNS) is read when the command runs."""
    global out, err
    out = Console(highlight=False, soft_wrap=False)
    err = Console(stderr=True, highlight=False, soft_wrap=True)


class Environment(StrEnum):
    sandbox = "sandbox"
    live = "live"


class ReplayMode(StrEnum):
    invoke = "invoke"
    put_events = "put-events"


# ------------------------------------------------------------------------------------------ shared options

StackOption = Annotated[
    str | None,
    typer.Option(
        "--stack",
        envvar="AFTERCALL_STACK",
        help="CloudFormation stack to target; its outputs name the bus, queue and function. "
        "Default: $AFTERCALL_STACK (set by `aftercall local`'s environment).",
        rich_help_panel="Target",
    ),
]
RegionOption = Annotated[
    str | None, typer.Option("--region", help="AWS region (default: AWS_REGION / your profile).", rich_help_panel="AWS")
]
ProfileOption = Annotated[
    str | None, typer.Option("--profile", help="AWS profile from ~/.aws/config.", rich_help_panel="AWS")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables (for scripts).")
]


class _Exit(Exception):
    """Leave with a message and an exit code (raised inside commands, formatted in one place)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@contextmanager
def _errors(as_json: bool) -> Iterator[None]:
    """Turn the errors an operator can act on into one clear line and the right exit code."""
    _fresh_consoles()
    try:
        yield
    except _Exit as exc:
        _fail(str(exc), exc.code, as_json)
    except emit_logic.EmitInputError as exc:
        _fail(str(exc), EXIT_USAGE, as_json)
    except TargetError as exc:
        _fail(str(exc), EXIT_USAGE, as_json)
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE, as_json)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        _fail(describe_aws_error(exc) or f"AWS call failed: {exc}", EXIT_FAILED, as_json)
    except KeyboardInterrupt:
        _fail(
            "interrupted: what was already sent stays sent; running the same command again is safe "
            "(processing is idempotent per conversation)",
            EXIT_FAILED,
            as_json,
        )


def _fail(message: str, code: int, as_json: bool) -> NoReturn:
    if as_json:
        out.print_json(json.dumps({"ok": False, "error": message, "exit_code": code}))
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _target(
    ctx: typer.Context,
    aws: Aws,
    stack: str | None,
    *,
    bus: str | None = None,
    queue_url: str | None = None,
    function: str | None = None,
    offline: bool = False,
) -> Target:
    """Resolve the target; a --stack that only came from $AFTERCALL_STACK yields to explicit names.

    ``offline``: nothing will be called with explicit names (an emit dry run), so no credentials needed.
    """
    explicit = bus or queue_url or function
    source = ctx.get_parameter_source("stack")
    if stack and explicit and source is not None and source.name == "ENVIRONMENT":
        stack = None
    if stack or (explicit and not offline):
        aws.check()
    return resolve_target(aws, stack=stack, bus=bus, queue_url=queue_url, function=function)


@contextmanager
def _progress(label: str, total: int | None, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for humans at a terminal; a no-op for scripts and --json."""
    if not enabled or not err.is_terminal:
        yield lambda _: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def _columns(table: Table, names: tuple[str, ...], flexible: tuple[str, ...]) -> None:
    """Ids and short fields stay on one line (copyable); ``flexible`` columns take the rest and wrap."""
    for name in names:
        if name in flexible:
            table.add_column(name, ratio=1, overflow="fold", min_width=16)
        else:
            table.add_column(name, no_wrap=True)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _short(text: str | None, width: int = 70) -> str:
    if not text:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


# ------------------------------------------------------------------------------------------ emit


@app.command(no_args_is_help=False)
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
    with _errors(as_json):
        paths = list(files or [])
        if (duplicates or invalid or seed is not None) and generate is None:
            raise _Exit("--duplicates, --invalid and --seed only apply with --generate N", EXIT_USAGE)
        if duplicates + invalid > 1.0:
            raise _Exit(f"--duplicates + --invalid must not exceed 1 (got {duplicates + invalid:g})", EXIT_USAGE)
        read_stdin = any(str(path) == "-" for path in paths)
        if not paths and generate is None:
            if sys.stdin is None or sys.stdin.isatty():
                raise _Exit("nothing to emit: pass JSON files, - for JSON lines on stdin, or --generate N", EXIT_USAGE)
            read_stdin = True
        aws = Aws(region=region, profile=profile, max_pool_connections=concurrency + 2)
        target = _target(ctx, aws, stack, bus=bus, offline=dry_run)
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
                err.print(f"[yellow]{escape(note)}[/]")
            items = imported.items
        if generate is not None:
            items.extend(
                emit_logic.generated(
                    generate, seed=seed, duplicates=duplicates, invalid=invalid, environment=env or "sandbox"
                )
            )
        if not items:
            raise _Exit("nothing to emit: the inputs hold no events", EXIT_USAGE)
        entries = emit_logic.prepare(
            items, bus=bus_name, source=source or target.event_source, environment=env, validate=validate
        )
        if dry_run:
            report = emit_logic.dry_run(entries)
        else:
            client = aws.client("events", max_attempts=1, read_timeout=20)
            with _progress("emitting", len(entries), not as_json) as tick:
                report = emit_logic.send(client, entries, concurrency=concurrency, progress=tick)
        _print_emit(report, target, bus_name, as_json)
        if not report.ok:
            raise typer.Exit(EXIT_FAILED)


def _print_emit(report: emit_logic.EmitReport, target: Target, bus: str, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps({**report.to_json(), "bus": bus, "stack": target.stack_name}))
        return
    if report.dry_run:
        out.print(
            f"[bold]dry run[/]: {report.total} event(s) checked, would be sent to bus [bold]{escape(bus)}[/] in "
            f"{report.batches} PutEvents call(s); largest entry {report.largest_entry_bytes:,} bytes. Nothing sent."
        )
        return
    colour = "green" if report.ok else "red"
    out.print(
        f"[{colour}]{report.accepted} of {report.total} event(s) accepted[/] by bus [bold]{escape(bus)}[/] "
        f"({report.api_calls} PutEvents call(s), {report.retried_entries} entr(y/ies) retried, "
        f"{report.seconds:.2f}s)"
    )
    if report.failures:
        table = Table(title=f"{len(report.failures)} event(s) NOT accepted", title_style="bold red")
        _columns(table, ("origin", "conversation", "error", "attempts"), flexible=("origin", "error"))
        for failure in report.failures:
            table.add_row(
                escape(failure.origin),
                escape(failure.conversation_id or "?"),
                escape(_short(f"{failure.error_code}: {failure.error_message}", 80)),
                str(failure.attempts),
            )
        out.print(table)


# ------------------------------------------------------------------------------------------ replay


@app.command()
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
    with _errors(as_json):
        aws = Aws(region=region, profile=profile, max_pool_connections=concurrency + 4)
        target = _target(ctx, aws, stack, bus=bus, queue_url=queue_url, function=function)
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
        with _progress("replaying" if not dry_run else "listing", depth or None, not as_json) as tick:
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
        out.print_json(json.dumps({**report.to_json(), "stack": target.stack_name}))
        return
    show_all = verbose or report.dry_run or len(report.outcomes) <= 50
    rows = [o for o in report.outcomes if show_all or o.action in ("failed-again", "unrecognised")]
    if rows:
        title = "dry run: nothing was changed" if report.dry_run else None
        table = Table(title=title, title_style="bold cyan")
        _columns(table, ("conversation", "shape", "age", "outcome", "error"), flexible=("outcome", "error"))
        for outcome in rows:
            style = _ACTION_STYLE.get(outcome.action, "")
            detail = f": {escape(_short(outcome.detail, 70))}" if outcome.detail else ""
            table.add_row(
                escape(outcome.conversation_id or f"(message {outcome.message_id[:8]})"),
                outcome.shape,
                _age(outcome.age_seconds),
                f"[{style}]{outcome.action}[/]{detail}",
                escape(_short(outcome.error, 60)),
            )
        out.print(table)
    summary = report.summary()
    parts = [f"{value} {name.replace('_', ' ')}" for name, value in summary.items()]
    colour = "green" if report.ok else "red"
    out.print(
        f"[{colour}]{'dry run, ' if report.dry_run else ''}{report.mode}:[/] {', '.join(parts)} "
        f"[dim]({report.depth_at_start} visible at start; {report.seconds:.2f}s; stopped: {escape(report.stopped)})[/]"
    )
    if report.count("failed-again"):
        out.print("[red]Messages that failed again stay in the queue (visible again now); fix the cause and re-run.[/]")
    if report.count("unrecognised"):
        out.print("[yellow]Unrecognised messages were left in the queue untouched; inspect them by hand.[/]")
    for failure in report.release_failures:
        err.print(f"[yellow]warning:[/] {escape(failure)}")
    if report.interrupted:
        err.print("[yellow]Interrupted: nothing was deleted without a successful hand-back; run again to go on.[/]")


# ------------------------------------------------------------------------------------------ status


@app.command()
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
    with _errors(as_json):
        aws = Aws(region=region, profile=profile)
        target = _target(ctx, aws, stack, queue_url=queue_url)
        queue = target.require_queue_url()
        report = status_logic.status(aws.client("sqs", read_timeout=30), queue, peek=peek, recent=recent)
        _print_status(report, target, as_json)
        if check and not report.empty:
            raise typer.Exit(EXIT_FAILED)


def _print_status(report: status_logic.StatusReport, target: Target, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps({**report.to_json(), "stack": target.stack_name}))
        return
    label = target.stack_name or report.queue_url
    if report.empty:
        out.print(f"[green]The failed-events queue of {escape(label)} is empty.[/]")
        return
    oldest = f", oldest {_age(report.oldest_age_seconds)} old" if report.oldest_age_seconds is not None else ""
    out.print(
        f"[bold red]{report.depth} failed event(s)[/] in the queue of {escape(label)} "
        f"({report.visible} visible, {report.in_flight} in flight{oldest})"
    )
    if report.peeked and not report.complete:
        out.print(f"[dim]Counts below cover the {report.peeked} message(s) peeked, not all of them.[/]")
    if report.by_shape:
        table = Table(title="by shape")
        table.add_column("shape")
        table.add_column("count", justify="right")
        for shape, count in report.by_shape.items():
            table.add_row(shape, str(count))
        out.print(table)
    if report.by_error:
        table = Table(title="by error")
        table.add_column("error")
        table.add_column("count", justify="right")
        for error, count in report.by_error.items():
            table.add_row(escape(error), str(count))
        out.print(table)
    if report.recent:
        table = Table(title="most recent failures")
        _columns(table, ("conversation", "shape", "age", "attempts", "error"), flexible=("error",))
        for message in report.recent:
            table.add_row(
                escape(message.conversation_id or f"(message {message.message_id[:8]})"),
                message.shape,
                _age(message.age_seconds),
                str(message.attempts) if message.attempts is not None else "",
                escape(_short(message.error, 80)),
            )
        out.print(table)
    for failure in report.release_failures:
        err.print(f"[yellow]warning:[/] {escape(failure)}")
    out.print("Replay them with: [bold]aftercall replay --dry-run[/] first, then [bold]aftercall replay[/]")


# ------------------------------------------------------------------------------------------ try

app.command("try", no_args_is_help=False)(try_command)
app.command("inspect")(inspect_command)

# ------------------------------------------------------------------------------------------ local


def _parameters(values: list[str]) -> dict[str, str]:
    parameters: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{value!r} is not Key=Value (e.g. Stage=sandbox)", param_hint="--parameter")
        parameters[key] = val
    return parameters


@app.command()
def local(
    stack_name: Annotated[str, typer.Option(help="Name of the local stack (resource names derive from it).")] = (
        "aftercall-local"
    ),
    parameter: Annotated[
        list[str] | None,
        typer.Option(
            "--parameter",
            "-p",
            help="Template parameter override, Key=Value (repeatable), e.g. -p Stage=sandbox -p MaxRetryAttempts=0.",
        ),
    ] = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Loopback port for the AWS endpoint (0: any free).")] = 0,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Concurrent End function runs (default: ReservedConcurrency).")
    ] = None,
    crm_url: Annotated[
        str | None,
        typer.Option(
            help="Use this CRM endpoint instead of the fake HubSpot: a CRM sandbox (HTTPS), or a fake on loopback "
            "(plain HTTP to loopback only). -p CrmProvider=... picks the adapter."
        ),
    ] = None,
    crm_token_file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="File holding the CRM's token (HubSpot), or its whole secret as a JSON object; with --crm-url.",
        ),
    ] = None,
) -> None:
    """Run the whole stack on this machine until Ctrl-C: AWS (moto on loopback), the dispatcher, a fake CRM
    (or the CRM given with --crm-url).

    Resource names, the rule's pattern, retry settings and the DLQ wiring come from template.yaml.
    Prints the environment to export so that aftercall emit/replay/status (and the AWS CLI) talk to it.
    """
    from aftercall_ops.cli.local_cmd import crm_secret_from_file, serve
    from aftercall_ops.emulator.moto_fixes import serialise_sqs_deletes

    serialise_sqs_deletes()  # moto can lose overlapping SQS deletes and sends; see moto_fixes.py
    try:
        if crm_token_file is not None and crm_url is None:
            raise ValueError("--crm-token-file goes with --crm-url (the fake CRM has its own token)")
        secret = crm_secret_from_file(crm_token_file) if crm_token_file is not None else None
        serve(
            stack_name,
            _parameters(parameter or []),
            moto_port=port,
            workers=workers,
            crm_url=crm_url,
            crm_secret=secret,
        )
    except ValueError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        err.print("stopped")


def main() -> None:  # pragma: no cover - console script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
