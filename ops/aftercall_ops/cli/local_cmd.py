"""``aftercall local``'s terminal side: run the local stack until Ctrl-C and print how to use it."""

from __future__ import annotations

import json
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from aftercall_ops.cli import common as ui
from aftercall_ops.cli.common import EXIT_USAGE, key_values
from aftercall_ops.generate import CUSTOMERS

if TYPE_CHECKING:  # the emulator (moto, boto3) loads only when the command runs
    from aftercall_ops.emulator.stack import LocalStack

log = logging.getLogger("aftercall_ops.emulator")


def _instructions(stack: LocalStack) -> Iterator[str]:
    yield f"# aftercall local stack {stack.stack_name!r} (Stage={stack.spec.stage}) is running. In another shell:"
    for key, value in stack.env.items():
        yield f"export {key}={shlex.quote(value)}"
    yield "unset AWS_PROFILE AWS_SESSION_TOKEN"
    yield ""
    yield f"# Stack outputs (aws cloudformation describe-stacks --stack-name {stack.stack_name}):"
    width = max(len(key) for key in stack.outputs)
    for key, value in sorted(stack.outputs.items()):
        yield f"#   {key:<{width}}  {value}"
    yield ""
    url = stack.crm_url
    if stack.external_crm_url is not None:
        yield f"# CRM: {url} (yours; the secret holds what --crm-token-file gave)"
        yield "# Ctrl-C stops it; everything lives in memory and is gone afterwards."
        return
    yield f"# Fake CRM (HubSpot API): {url}  ({len(CUSTOMERS)} contacts from aftercall_ops.generate.CUSTOMERS)"
    yield "#   make every CRM request fail:"
    fault = json.dumps({"kind": "status", "status": 503})
    yield f"#     curl -s -X POST {url}/__admin/faults -H 'Content-Type: application/json' -d '{fault}'"
    yield f"#   back to normal:  curl -s -X DELETE {url}/__admin/faults"
    yield f"#   what it holds:   curl -s {url}/__admin/state"
    for function, function_url in stack.function_urls.items():
        yield f"# Function URL of {function}: {function_url}"
    yield f"# JSON logs of the functions: {stack.state_dir}/*.log (End function: {stack.log_path.name})"
    yield (
        f"# {stack.workers} environment(s), timeout {stack.function_timeout:g} s, "
        f"{stack.max_retries} retries after {', '.join(f'{d:g}' for d in stack.retry_delays) or '0'} s."
    )
    yield "# Ctrl-C stops it; everything lives in memory and is gone afterwards."


def crm_secret_from_file(path: Path) -> dict[str, str]:
    """The CRM secret from a file: a JSON object (every key, for Salesforce or Zendesk), or a bare token
    (HubSpot's ``access_token``)."""
    text = path.read_text().strip()
    if not text:
        raise ValueError(f"{path} is empty: put the CRM's token (or its secret as a JSON object) in it")
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError(f"{path} starts with '{{' but is not a JSON object") from None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError(f"{path} must hold a JSON object of strings")
        return value
    return {"access_token": text}


def serve(
    stack_name: str,
    parameters: dict[str, str],
    *,
    moto_port: int,
    workers: int | None,
    crm_url: str | None = None,
    crm_secret: Mapping[str, str] | None = None,
) -> None:
    """Run the local stack until Ctrl-C or SIGTERM, printing how to use it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    from aftercall_ops.emulator.stack import LocalStack

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with LocalStack(
            stack_name, parameters, workers=workers, moto_port=moto_port, crm_url=crm_url, crm_secret=crm_secret
        ) as stack:
            print("\n".join(_instructions(stack)), flush=True)
            while not stop.wait(0.5):
                pass
            print("# stopping the local stack ...", file=sys.stderr, flush=True)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        log.removeHandler(handler)


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
    from aftercall_ops.emulator.moto_fixes import serialise_sqs_deletes

    serialise_sqs_deletes()  # moto can lose overlapping SQS deletes and sends; see moto_fixes.py
    try:
        if crm_token_file is not None and crm_url is None:
            raise ValueError("--crm-token-file goes with --crm-url (the fake CRM has its own token)")
        secret = crm_secret_from_file(crm_token_file) if crm_token_file is not None else None
        serve(
            stack_name,
            key_values(parameter or [], "--parameter"),
            moto_port=port,
            workers=workers,
            crm_url=crm_url,
            crm_secret=secret,
        )
    except ValueError as exc:
        ui.err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        ui.err.print("stopped")
