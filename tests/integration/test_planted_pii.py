"""Planted personal data and secrets reach no log, error, queue reason, ledger item or CLI output.

Issue 11, item 3. An email address, a phone number and a token are planted in every position an
event and the End function can put them: state keys and values, unknown top-level detail fields
(as their names and values), action arguments, and the text of exceptions the End function
raises. The run goes through the real runtime on the local stack (moto, fake HubSpot); then every
line logged at DEBUG, every error Lambda would record, every failed-events queue body (the event
itself aside: it is kept whole so that it can be replayed), every DynamoDB item and the output of
``aftercall status`` and ``aftercall replay --dry-run`` are scanned for the raw values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from typer.testing import CliRunner

from aftercall import aws
from aftercall.conversation import Conversation
from aftercall.errors import AftercallError
from aftercall_ops.cli import app
from end_function import end_function as default_end_function
from tests.support.events import conversation_ended, outbound_call_ended
from tests.support.lambda_context import lambda_context
from tests.support.logs import everything as capture_every_line  # noqa: F401 - a fixture, used by name
from tests.support.ops import on_failure_record
from tests.support.stack import HandlerPeers

EMAIL = "planted.person@example.org"
PHONE = "+447700900123"
TOKEN = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
#: Each planted value as it could appear: whole, and the parts that identify on their own.
RAW = [EMAIL, "planted.person", PHONE, PHONE[1:], PHONE[-10:], TOKEN, TOKEN[8:]]
PLANTED = {EMAIL: TOKEN, PHONE: EMAIL, TOKEN: PHONE, "note": f"call {PHONE} or mail {EMAIL}, key {TOKEN}"}


def _raises_with_the_data(conv: Conversation) -> None:
    raise RuntimeError(f"lookup failed for {conv.state.get('note')} ({EMAIL}, {PHONE}, {TOKEN})")


def _bad_disposition(conv: Conversation) -> None:
    conv.actions.log_disposition(EMAIL)


def _bad_follow_up_kind(conv: Conversation) -> None:
    conv.actions.schedule_follow_up("2030-01-01T09:00:00Z", "hello", kind=PHONE)  # type: ignore[arg-type]


def _bad_follow_up_key(conv: Conversation) -> None:
    conv.actions.schedule_follow_up("2030-01-01T09:00:00Z", "hello", key=EMAIL)


def _bad_notify_key(conv: Conversation) -> None:
    conv.actions.notify("Lead", {"who": EMAIL}, key=PHONE)


def _key_error_on_planted_key(conv: Conversation) -> None:
    conv.state[f"missing {EMAIL}"]


#: Top-level detail fields the contract does not have, named (and valued) with the planted data.
UNKNOWN_FIELDS: dict[str, Any] = {EMAIL: "x", PHONE: TOKEN, "extra": EMAIL}

RUNS: list[tuple[str, dict[str, Any], Callable[[Conversation], None]]] = [
    ("state keys and values", conversation_ended(state=PLANTED), default_end_function),
    (
        "outbound, state everywhere",
        outbound_call_ended(state={**PLANTED, "disposition": "interested"}),
        default_end_function,
    ),
    ("unknown detail fields", conversation_ended(**UNKNOWN_FIELDS), default_end_function),
    ("end_function raises with the data", conversation_ended(state=PLANTED), _raises_with_the_data),
    ("disposition argument", outbound_call_ended(state=PLANTED), _bad_disposition),
    ("follow-up kind argument", conversation_ended(state=PLANTED), _bad_follow_up_kind),
    ("follow-up key argument", conversation_ended(state=PLANTED), _bad_follow_up_key),
    ("notify key argument", conversation_ended(state=PLANTED), _bad_notify_key),
    ("KeyError on a planted key", conversation_ended(state=PLANTED), _key_error_on_planted_key),
]


def _leaks(text: str) -> list[str]:
    return [value for value in RAW if value in text]


@pytest.mark.parametrize("capture_every_line", [logging.DEBUG], ids=["DEBUG"], indirect=True)
def test_planted_personal_data_and_tokens_reach_no_log_queue_ledger_or_cli_output(
    stack: HandlerPeers,
    capture_every_line: Callable[[], str],  # noqa: F811 - the fixture imported above
) -> None:
    # Given events and End functions that put an email, a phone number and a token everywhere
    runtime = stack.runtime()
    sqs = aws.client("sqs")
    outcomes: dict[str, str] = {}
    # When each runs through the runtime; an error raised is kept as Lambda's OnFailure record would
    for name, event, function in RUNS:
        try:
            report = runtime.handle(event, lambda_context(), function)
            outcomes[name] = str(report.get("status"))
        except AftercallError as error:
            outcomes[name] = "raised"
            record = on_failure_record(event, error_type=type(error).__name__, message=str(error))
            sqs.send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps(record))
    # Then every run did what it should: processed, rejected (parked), or raised (kept)
    assert outcomes == {
        "state keys and values": "processed",
        "outbound, state everywhere": "processed",
        "unknown detail fields": "rejected",
        "end_function raises with the data": "raised",
        "disposition argument": "raised",
        "follow-up kind argument": "raised",
        "follow-up key argument": "raised",
        "notify key argument": "raised",
        "KeyError on a planted key": "raised",
    }
    # And the operator's view of the queue holds none of it
    runner = CliRunner()
    cli = [
        runner.invoke(app, ["status", "--queue-url", stack.queue_url, *flags], env={"COLUMNS": "200"})
        for flags in ([], ["--json"])
    ] + [
        runner.invoke(app, ["replay", "--queue-url", stack.queue_url, "--dry-run", *flags], env={"COLUMNS": "200"})
        for flags in (["--verbose"], ["--json"])
    ]
    cli_output = "\n".join(result.stdout + result.stderr for result in cli)
    assert "unknown disposition" in cli_output  # the reasons are there, the values are not
    assert _leaks(cli_output) == []
    # And no log line at DEBUG holds any of it (EMF metrics and the AWS SDK's own lines included)
    logged = capture_every_line()
    assert '"message":"conversation ended"' in logged
    assert _leaks(logged) == []
    # And no failed-events queue body does, once the event it keeps for replay is set aside
    bodies = stack.parked()
    assert len(bodies) == 7
    for body in bodies:
        body.pop("requestPayload")
        assert _leaks(json.dumps(body)) == [], body
    # And no item in the idempotency table (Powertools records and the action ledger) does
    items = aws.client("dynamodb").scan(TableName=stack.table)["Items"]
    assert items
    assert _leaks(json.dumps(items)) == []
