"""What every ``aftercall`` command shares: the consoles, the options, the one mapping from errors to
exit codes, the one ``Key=Value`` parser, and small formatting helpers.

Exit codes: 0 all good; 1 something failed or was not accepted (or, with ``status --check``,
the queue is not empty); 2 bad arguments or configuration (unknown stack, no credentials...).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import botocore.exceptions
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aftercall_ops.operations.emit import EmitInputError
from aftercall_ops.operations.targets import Aws, Target, TargetError, describe_aws_error, resolve_target

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fresh_consoles() -> None:
    """New consoles per command, so the terminal width (or $COLUMNS) is read when the command runs."""
    global out, err
    out = Console(highlight=False, soft_wrap=False)
    err = Console(stderr=True, highlight=False, soft_wrap=True)


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


class CommandExit(Exception):
    """Leave with a message and an exit code (raised inside commands, formatted in one place)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@contextmanager
def errors(as_json: bool) -> Iterator[None]:
    """Turn the errors an operator can act on into one clear line and the right exit code."""
    fresh_consoles()
    try:
        yield
    except CommandExit as exc:
        fail(str(exc), exc.code, as_json)
    except EmitInputError as exc:
        fail(str(exc), EXIT_USAGE, as_json)
    except TargetError as exc:
        fail(str(exc), EXIT_USAGE, as_json)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE, as_json)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        fail(describe_aws_error(exc) or f"AWS call failed: {exc}", EXIT_FAILED, as_json)
    except KeyboardInterrupt:
        fail(
            "interrupted: what was already sent stays sent; running the same command again is safe "
            "(processing is idempotent per conversation)",
            EXIT_FAILED,
            as_json,
        )


def fail(message: str, code: int, as_json: bool) -> NoReturn:
    if as_json:
        out.print_json(json.dumps({"ok": False, "error": message, "exit_code": code}))
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def resolve(
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
def progress(label: str, total: int | None, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for humans at a terminal; a no-op for scripts and --json."""
    if not enabled or not err.is_terminal:
        yield lambda _: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def columns(table: Table, names: tuple[str, ...], flexible: tuple[str, ...]) -> None:
    """Ids and short fields stay on one line (copyable); ``flexible`` columns take the rest and wrap."""
    for name in names:
        if name in flexible:
            table.add_column(name, ratio=1, overflow="fold", min_width=16)
        else:
            table.add_column(name, no_wrap=True)


def age(seconds: float | None) -> str:
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


def short(text: str | None, width: int = 70) -> str:
    if not text:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def key_values(values: list[str], option: str) -> dict[str, str]:
    """``Key=Value`` options (``-p Stage=sandbox``) as a dict; a malformed one is a usage error naming ``option``."""
    parsed: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{value!r} is not Key=Value (e.g. Stage=sandbox)", param_hint=option)
        parsed[key] = val
    return parsed
