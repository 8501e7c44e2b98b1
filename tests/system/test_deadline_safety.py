"""Deadline safety: Lambda stops an invocation at its deadline in the middle of an action.

The local stack runs the real EndHandler in a worker process and kills that process when the
function timeout passes, as Lambda does, then retries the event after a delay. The fake HubSpot
applies the ticket create at once but trickles its answer a byte at a time, so the invocation is
still reading it when the deadline comes (each read gets a byte in time: the client's read timeout
never fires). What the retry must do: take over the action whose lease ran out, wait for what the
stopped attempt may have written, find the ticket it made, and write nothing twice.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aftercall.crm.hubspot import marker
from aftercall.ledger import COMPLETED, IN_PROGRESS, ActionLedger
from aftercall_ops.emulator.stack import LocalStack
from aftercall_ops.generate import conversation

TIMEOUT = 4.0
#: Lambda waits about a minute before its first retry; long enough here to look at the ledger in between.
RETRY_DELAY = 3.0
NOTE_CREATE = "/crm/v3/objects/notes$"
TICKET_CREATE = "/crm/v3/objects/tickets$"


def support_call() -> dict[str, Any]:
    """An inbound call the agent could not resolve: the End function plans a note and a ticket."""
    rng = random.Random(uuid.uuid4().int)
    while (detail := conversation(rng, rng.randrange(10**6))).get("direction") != "inbound":
        pass
    detail["state"].update(
        support_needed=True,
        follow_up_required=False,
        ticket_subject="Charged twice",
        issue_description="Two charges for one order.",
    )
    return detail


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.02)


def test_an_invocation_stopped_mid_action_leaves_a_lease_and_the_retry_finishes_without_repeating(
    tmp_path: Path,
) -> None:
    with LocalStack(
        f"aftercall-test-deadline-{uuid.uuid4().hex[:6]}",
        {"Stage": "live"},
        workers=1,
        function_timeout=TIMEOUT,
        retry_delays=(RETRY_DELAY,),
        state_dir=tmp_path,
        end_handler_environment={"CRM_READ_TIMEOUT_SECONDS": "1"},
    ) as stack:
        # Given a support call (a note and a ticket), and HubSpot applying the ticket create but
        # trickling its answer
        detail = support_call()
        detail["environment"] = "live"
        conversation_id = detail["conversation_id"]
        stack.crm.add_fault("trickle", method="POST", path=TICKET_CREATE, interval=0.5, times=1)
        ledger = ActionLedger(stack.outputs["IdempotencyTableName"], 3600, client=stack.client("dynamodb"))

        # When the event arrives and Lambda stops the invocation at its deadline
        before_ms = int(time.time() * 1000)
        stack.client("events").put_events(
            Entries=[
                {
                    "EventBusName": stack.outputs["EventBusName"],
                    "Source": stack.outputs["EventSource"],
                    "DetailType": "Conversation Ended",
                    "Detail": json.dumps(detail),
                }
            ]
        )
        wait_for(lambda: stack.counts()["timeouts"] == 1, "the invocation to be stopped at its deadline")
        stopped_ms = int(time.time() * 1000)
        note = ledger.lookup(conversation_id, "crm_summary")
        ticket = ledger.lookup(conversation_id, "support_ticket")

        # Then the note was done; the ticket's ledger item is still in progress, its lease ending at
        # the deadline (so the retry may take it over); and HubSpot holds the ticket it applied
        assert stack.counts()["invocations"] == 1
        assert note is not None
        assert ticket is not None
        assert note["status"] == COMPLETED
        assert ticket["status"] == IN_PROGRESS
        assert before_ms + TIMEOUT * 1000 <= int(ticket["in_progress_expiration"]) <= stopped_ms
        (made,) = stack.crm.tickets_for(marker(conversation_id))

        # When Lambda retries the event
        stack.wait_idle(timeout=120)

        # Then the retry succeeded: it found the ticket the stopped attempt made and recorded it,
        # and neither the note nor the ticket was created again
        counts = stack.counts()
        assert (counts["invocations"], counts["timeouts"], counts["succeeded"], counts["sent_to_dlq"]) == (2, 1, 1, 0)
        ticket = ledger.lookup(conversation_id, "support_ticket")
        assert ticket is not None
        assert ticket["status"] == COMPLETED
        assert json.loads(ticket["result"])["object_id"] == made["id"]
        assert len(stack.crm.notes_for(marker(conversation_id))) == 1
        assert len(stack.crm.tickets_for(marker(conversation_id))) == 1
        assert len(stack.crm.requests_to("POST", NOTE_CREATE)) == 1
        assert len(stack.crm.requests_to("POST", TICKET_CREATE)) == 1
        # And the platform log shows the stop, as Lambda reports it
        reports = [r["record"] for r in stack.log_records() if r.get("type") == "platform.report"]
        assert [r["status"] for r in reports] == ["timeout", "success"]
        assert "Task timed out after 4.00 seconds" in reports[0]["errorMessage"]
