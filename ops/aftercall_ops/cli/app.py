"""The ``aftercall`` command: one typer app; each command's options and output live in ``*_cmd.py``,
what they share in :mod:`common`, the logic in :mod:`aftercall_ops.operations`.
"""

from __future__ import annotations

import typer

from aftercall_ops.cli.chaos_cmd import chaos
from aftercall_ops.cli.demo_cmd import demo
from aftercall_ops.cli.emit_cmd import emit
from aftercall_ops.cli.fake_cmd import fake
from aftercall_ops.cli.inspect_cmd import inspect_command
from aftercall_ops.cli.local_cmd import local
from aftercall_ops.cli.replay_cmd import replay
from aftercall_ops.cli.status_cmd import status
from aftercall_ops.cli.try_cmd import try_command

app = typer.Typer(
    name="aftercall",
    help=(
        "Operate an aftercall stack: put **Conversation Ended** events on its bus, see and replay what "
        "landed in its failed-events queue, or run the whole stack locally (**local**, **demo**, **chaos**, "
        "**fake**).\n\n"
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

app.command(no_args_is_help=False)(emit)
app.command()(replay)
app.command()(status)
app.command("try", no_args_is_help=False)(try_command)
app.command("inspect")(inspect_command)
app.command()(local)
app.command()(demo)
app.command()(chaos)
app.add_typer(fake)
