"""``aftercall demo`` (``make demo``): the whole pipeline on this machine, told as a story."""

from __future__ import annotations

from typing import Annotated

import typer

from aftercall_ops.cli.common import EXIT_FAILED, EXIT_OK


def demo(
    calls: Annotated[
        int,
        typer.Option(min=2, max=1000, help="Conversations in part 2 (a day of calls with an outage and a replay)."),
    ] = 60,
) -> None:
    """Run the whole pipeline locally (no AWS account, no Docker) and check what it claims: the sample events
    in the CRM, the outage's events in the failed-events queue, every conversation processed exactly once
    after the replay, each agent platform's webhook through ingest. Exit code 0 when every check held."""
    from aftercall_ops.operations import demo as story  # loads the emulator and the End function

    raise typer.Exit(EXIT_OK if story.run(calls) else EXIT_FAILED)
