"""What the EndHandler does with one event: parse, deduplicate, run ``end_function``, perform.

``functions/end_handler/app.py`` wires Powertools around :meth:`EndHandlerRuntime.handle`;
everything here is plain Python that tests drive against the local stack.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from aftercall.actions import ActionOutcome, ActionPlan, ledger_entries, perform_actions
from aftercall.conversation import Conversation
from aftercall.credentials import SecretCredentials
from aftercall.crm.base import Crm
from aftercall.crm.limiter import share
from aftercall.deadline import Deadline
from aftercall.errors import (
    ActionsFailedError,
    AftercallError,
    ConflictingDuplicateError,
    ConversationInProgressError,
    EndFunctionError,
    InvalidEventError,
)
from aftercall.failures import park, rejection_record
from aftercall.ledger import ActionLedger, Begun
from aftercall.models.event import ConversationEndedDetail, ConversationEndedEvent
from aftercall.notifications import Notifier
from aftercall.observability import logger, metrics
from aftercall.privacy import mask_email, mask_phone
from aftercall.reporting import record_actions, record_conversation
from aftercall.settings import Settings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from aftercall.follow_ups import FollowUpScheduler

EndFunction = Callable[[Conversation], object]

#: Stop waiting for a twin invocation when less than this is left of our own time budget.
TWIN_WAIT_MARGIN_SECONDS = 5.0


def describe_validation_error(exc: ValidationError) -> str:
    """Name every bad field and why, without echoing its value (it may be personal data)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = error["loc"]
        if loc[:2] == ("detail", "state"):
            loc = loc[:2]  # below state the location is made of the user's own keys: data, not field names
        location = ".".join(str(part) for part in loc) or "event"
        problem = f"{location}: {error['msg']}"
        if problem not in problems:
            problems.append(problem)
    return "; ".join(problems)


def parse_event(event: Any, stage: str) -> ConversationEndedDetail:
    """The event's validated detail, or :class:`InvalidEventError` naming what is wrong."""
    try:
        if isinstance(event, str | bytes):
            envelope = ConversationEndedEvent.model_validate_json(event)
        else:
            envelope = ConversationEndedEvent.model_validate(event)
    except ValidationError as exc:
        raise InvalidEventError(f"not a valid Conversation Ended event: {describe_validation_error(exc)}") from None
    detail = envelope.detail
    if detail.environment != stage:
        raise InvalidEventError(
            f"detail.environment is {detail.environment!r} but this is the {stage!r} stack; "
            "the event was sent to the wrong stage"
        )
    return detail


def payload_hash(detail: ConversationEndedDetail) -> str:
    """What tells a duplicate from a conflicting one: a digest of the whole validated detail."""
    canonical = json.dumps(detail.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class EndHandlerRuntime:
    """Everything one warm Lambda process keeps between invocations: clients, CRM session, caches."""

    def __init__(self, settings: Settings, crm_factory: Callable[[Settings], Crm] | None = None) -> None:
        self.settings = settings
        self._crm_factory = crm_factory or build_crm
        self._crm: Crm | None = None
        self._crm_lock = threading.Lock()
        self.ledger = ActionLedger(settings.idempotency_table, settings.retention_seconds)

    def crm(self) -> Crm:
        with self._crm_lock:
            if self._crm is None:
                self._crm = self._crm_factory(self.settings)
            return self._crm

    def follow_ups(self) -> FollowUpScheduler:
        from aftercall.follow_ups import FollowUpScheduler  # only End functions that schedule follow-ups load it

        s = self.settings
        return FollowUpScheduler(
            s.follow_up_schedule_group, s.follow_up_target_arn, s.scheduler_role_arn, s.follow_up_dead_letter_arn
        )

    def notifier(self) -> Notifier:
        return Notifier(self.settings.notifications_topic_arn)

    def handle(self, event: Any, context: LambdaContext, end_function: EndFunction) -> dict[str, Any]:
        """Process one event. Returns a report; raises when a retry can still help.

        Logs one INFO line per conversation ("conversation ended", with what happened) and one
        ERROR line per failed action; everything else is DEBUG.
        """
        started = time.monotonic()
        try:
            detail = parse_event(event, self.settings.stage)
        except InvalidEventError as err:
            return self._reject(event, err, context)
        logger.append_keys(conversation_id=detail.conversation_id)
        logger.debug("conversation received", extra={"state_keys": sorted(detail.state)[:50]})
        deadline = Deadline.from_context(context)
        try:
            begun = self._begin_waiting_for_twin(detail, deadline)
        except ConflictingDuplicateError as conflict:
            return self._reject(event, conflict, context)
        if begun.duplicate:
            metrics.add_metric(name="DuplicateConversations", unit=MetricUnit.Count, value=1)
            actions = {name: {"status": "already_done", "result": c.result} for name, c in begun.previous.items()}
            self._log_conversation(detail, "duplicate", {name: "already_done" for name in actions}, started)
            report = {"conversation_id": detail.conversation_id, "status": "processed", "actions": actions}
            return {**report, "duplicate": True}
        return self._process(detail, end_function, deadline, begun, started)

    def _begin_waiting_for_twin(self, detail: ConversationEndedDetail, deadline: Deadline) -> Begun:
        """Take the conversation; if a twin event of it is in progress elsewhere, wait for it.

        A duplicate emission (or a replayed copy) can arrive while its twin is still running.
        Failing it would only send it round Lambda's retries and possibly into the failed-events
        queue; waiting (bounded by this invocation's deadline) finds the twin's outcome: done (a
        duplicate), or failed and released, and then this invocation processes the conversation.
        """
        digest = payload_hash(detail)
        delay = 0.1
        while True:
            try:
                return self.ledger.begin(detail.conversation_id, digest, deadline)
            except ConversationInProgressError:
                if deadline.remaining() < TWIN_WAIT_MARGIN_SECONDS + delay:
                    raise
                if delay == 0.1:
                    logger.info("another invocation is processing this conversation; waiting for it to finish")
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _process(
        self,
        model: ConversationEndedDetail,
        end_function: EndFunction,
        deadline: Deadline,
        begun: Begun,
        started: float,
    ) -> dict[str, Any]:
        plan = ActionPlan(model, self.crm, self.follow_ups, self.notifier)
        conv = Conversation(model, plan)
        try:
            end_function(conv)
        except Exception as exc:
            logger.exception("end_function raised; no action was performed, the event will be retried")
            metrics.add_metric(name="EndFunctionErrors", unit=MetricUnit.Count, value=1)
            self.ledger.release(model.conversation_id, begun)
            raise EndFunctionError(f"end_function raised {type(exc).__name__}: {exc}") from exc
        outcomes = perform_actions(
            model.conversation_id, plan.planned, self.ledger, deadline, self.settings.action_concurrency, begun
        )
        failures = {o.name: o.error for o in outcomes if o.status == "failed" and o.error is not None}
        self.ledger.finish(model.conversation_id, completed=not failures, entries=ledger_entries(outcomes))
        self._report_failures(outcomes)
        statuses: dict[str, str] = {o.name: o.status for o in outcomes}
        if failures:
            record_actions((o.name, o.status) for o in outcomes)
            self._log_conversation(model, "failed", statuses, started)
            raise ActionsFailedError(model.conversation_id, failures)
        record_conversation(model, [(o.name, o.status) for o in outcomes])
        self._log_conversation(model, "processed", statuses, started)
        return {
            "conversation_id": model.conversation_id,
            "status": "processed",
            "actions": {o.name: o.to_json() for o in outcomes},
        }

    def _report_failures(self, outcomes: list[ActionOutcome]) -> None:
        for outcome in outcomes:
            if outcome.status == "failed":
                logger.error(
                    "action failed",
                    extra={"action": outcome.name, "error": f"{type(outcome.error).__name__}: {outcome.error}"},
                )
            else:
                logger.debug(
                    "action " + outcome.status.replace("_", " "),
                    extra={"action": outcome.name, "result": outcome.result, "seconds": round(outcome.seconds, 3)},
                )

    @staticmethod
    def _log_conversation(
        detail: ConversationEndedDetail, outcome: str, actions: dict[str, str], started: float
    ) -> None:
        """The one INFO line of a conversation: what it was and what happened to each action."""
        message = "conversation ended" if outcome != "duplicate" else "conversation ended: already processed"
        logger.info(
            message,
            extra={
                "outcome": outcome,
                "direction": detail.direction,
                "channel": detail.channel,
                "customer_phone": mask_phone(detail.customer_phone),
                "customer_email": mask_email(detail.customer_email),
                "actions": actions,
                "seconds": round(time.monotonic() - started, 3),
            },
        )

    def _reject(self, event: Any, error: AftercallError, context: LambdaContext) -> dict[str, Any]:
        """Park a permanently failing event in the failed-events queue at once (see failures.py)."""
        logger.error("event rejected", extra={"error_type": type(error).__name__, "error": str(error)})
        metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
        queue_url = self.settings.failed_events_queue_url
        if not queue_url:
            raise error
        record = rejection_record(event, error, context.aws_request_id, context.invoked_function_arn)
        try:
            message_id = park(queue_url, record)
        except Exception as exc:
            logger.exception("could not park the rejected event; raising so Lambda's OnFailure keeps it")
            raise error from exc
        return {"status": "rejected", "error_type": type(error).__name__, "error": str(error), "parked_as": message_id}


def build_crm(settings: Settings) -> Crm:
    """The configured CRM adapter (only the one in use is imported: keeps cold starts short)."""
    http: dict[str, Any] = {"allow_loopback_http": settings.local_mode}
    if settings.crm_read_timeout is not None:
        http["read_timeout"] = settings.crm_read_timeout
    limiter = share(settings.crm_rate_limit, settings.reserved_concurrency)
    if limiter is not None:  # this environment's share of the CRM's limit, for every CRM client in it
        http["limiter"] = limiter
    if settings.crm_provider == "hubspot":
        from aftercall.crm.hubspot import DEFAULT_BASE_URL, HubSpotCrm

        credentials = SecretCredentials(settings.crm_secret_id, ("access_token",), settings.secret_max_age)
        return HubSpotCrm(credentials, settings.crm_base_url or DEFAULT_BASE_URL, **http)
    if settings.crm_provider == "salesforce":
        from aftercall.crm import salesforce

        credentials = SecretCredentials(settings.crm_secret_id, salesforce.SECRET_KEYS, settings.secret_max_age)
        return salesforce.SalesforceCrm(credentials, settings.crm_base_url, **http)
    if settings.crm_provider == "zendesk":
        from aftercall.crm import zendesk

        credentials = SecretCredentials(settings.crm_secret_id, zendesk.SECRET_KEYS, settings.secret_max_age)
        return zendesk.ZendeskCrm(credentials, settings.crm_base_url, **http)
    if settings.crm_provider == "webhook":
        from aftercall.crm import webhook

        credentials = SecretCredentials(settings.crm_secret_id, webhook.SECRET_KEYS, settings.secret_max_age)
        return webhook.WebhookCrm(credentials, settings.crm_base_url, **http)
    raise AssertionError(f"unreachable: provider {settings.crm_provider!r} passed Settings validation")
