"""FollowUp Lambda entry point: EventBridge Scheduler invokes it with a follow-up payload when due."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from aftercall.crm.base import CrmCall
from aftercall.deadline import Deadline
from aftercall.follow_ups.send import FollowUpSender
from aftercall.ledger import ActionLedger
from aftercall.observability import logger, metrics, tracer
from aftercall.settings import FollowUpSettings

_sender: FollowUpSender | None = None


def sender() -> FollowUpSender:
    """Built on the first invocation, then reused while the process stays warm."""
    global _sender
    if _sender is None:
        settings = FollowUpSettings.from_env()
        ledger = ActionLedger(settings.idempotency_table, settings.retention_seconds)
        _sender = FollowUpSender(ledger, settings.event_bus_name, settings.from_email)
    return _sender


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(conversation_id=event.get("conversation_id") if isinstance(event, dict) else None)
    result = sender().send(event, CrmCall(Deadline.from_context(context)))
    logger.info("follow-up handled", extra={"result": result})
    return result
