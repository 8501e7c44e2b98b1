"""What the EndHandler does with one event: parse, deduplicate, run ``end_function``, perform.

``functions/end_handler/app.py`` wires Powertools around :meth:`EndHandlerRuntime.handle`;
everything here is plain Python that tests drive against the local stack.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from aftercall import aws
from aftercall.actions import ActionOutcome, ActionPlan, ledger_entries, perform_actions
from aftercall.conversation import Conversation
from aftercall.credentials import SecretCredentials
from aftercall.crm.base import Crm
from aftercall.crm.caller_lease import CallerLeases
from aftercall.crm.callers import NewCallers, UnknownCallerPolicy
from aftercall.crm.limiter import share
from aftercall.deadline import Deadline
from aftercall.errors import (
    ActionsFailedError,
    AftercallError,
    ConflictingDuplicateError,
    EndFunctionError,
    InvalidEventError,
)
from aftercall.failures import park, rejection_record
from aftercall.guard import ConversationGuard
from aftercall.ledger import RECORD_PREFIX, ActionLedger, record_key
from aftercall.models.event import CONTRACT_NAMES, ConversationEndedDetail, ConversationEndedEvent
from aftercall.notifications import Notifier
from aftercall.observability import logger, metrics
from aftercall.privacy import describe_exception, mask_email, mask_phone, where_raised
from aftercall.reporting import record_actions, record_conversation
from aftercall.settings import EndHandlerSettings

if TYPE_CHECKING:
    from aftercall.follow_ups.schedule import FollowUpScheduler

EndFunction = Callable[[Conversation], object]

#: Powertools idempotency records are keyed ``<prefix>#<md5 of the conversation id>`` (aftercall inspect reads them).
IDEMPOTENCY_KEY_PREFIX = RECORD_PREFIX
#: Stop waiting for a twin invocation when less than this is left of our own time budget.
TWIN_WAIT_MARGIN_SECONDS = 5.0


def describe_validation_error(exc: ValidationError) -> str:
    """Name every bad field and why, without echoing its value (it may be personal data).

    Only the contract's own field names are quoted; a name the sender made up (an unexpected
    field, a key of ``state``) is data, so it is counted instead.
    """
    problems = []
    unexpected: dict[str, int] = {}
    for error in exc.errors(include_input=False, include_url=False):
        loc = error["loc"]
        if loc[:2] == ("detail", "state"):
            loc = loc[:2]  # below state the location is made of the user's own keys: data, not field names
        if error["type"] == "extra_forbidden":
            parent = ".".join(str(part) for part in loc[:-1] if part in CONTRACT_NAMES) or "event"
            unexpected[parent] = unexpected.get(parent, 0) + 1
            continue
        location = ".".join(str(p) if p in CONTRACT_NAMES or isinstance(p, int) else "<name>" for p in loc) or "event"
        problem = f"{location}: {error['msg']}"
        if problem not in problems:
            problems.append(problem)
    for parent, count in unexpected.items():
        problems.append(f"{parent}: {count} unexpected field(s) (names not quoted: they may be personal data)")
    return "; ".join(problems)


def parse_event(event: Any, stage: str) -> ConversationEndedDetail:
    """The event's validated detail, or :class:`InvalidEventError` naming what is wrong."""
    try:
        envelope = parse(event=event, model=ConversationEndedEvent)
    except ValidationError as exc:
        raise InvalidEventError(f"not a valid Conversation Ended event: {describe_validation_error(exc)}") from None
    detail = envelope.detail
    if detail.environment != stage:
        raise InvalidEventError(
            f"detail.environment is {detail.environment!r} but this is the {stage!r} stack; "
            "the event was sent to the wrong stage"
        )
    return detail


class EndHandlerRuntime:
    """Everything one warm Lambda process keeps between invocations: clients, CRM session, caches."""

    def __init__(
        self, settings: EndHandlerSettings, crm_factory: Callable[[EndHandlerSettings], Crm] | None = None
    ) -> None:
        self.settings = settings
        self._crm_factory = crm_factory or build_crm
        self._crm: Crm | None = None
        self._crm_lock = threading.Lock()
        self.ledger = ActionLedger(settings.idempotency_table, settings.retention_seconds)
        self.idempotency_config = IdempotencyConfig(
            event_key_jmespath="conversation_id",
            payload_validation_jmespath="@",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=settings.retention_seconds,
            response_hook=_already_processed,
        )
        self.guard = ConversationGuard(settings.idempotency_table, aws.client("dynamodb"))
        self._process_once = idempotent_function(
            data_keyword_argument="detail",
            persistence_store=self.guard,
            config=self.idempotency_config,
            key_prefix=IDEMPOTENCY_KEY_PREFIX,
        )(self._process)

    def crm(self) -> Crm:
        with self._crm_lock:
            if self._crm is None:
                self._crm = self._crm_factory(self.settings)
            return self._crm

    def follow_ups(self) -> FollowUpScheduler:
        from aftercall.follow_ups.schedule import (
            FollowUpScheduler,  # only End functions that schedule follow-ups load it
        )

        s = self.settings
        return FollowUpScheduler(
            s.follow_up_schedule_group, s.follow_up_target_arn, s.scheduler_role_arn, s.follow_up_dead_letter_arn
        )

    def notifier(self) -> Notifier:
        return Notifier(self.settings.notifications_topic_arn)

    def handle(self, event: Any, context: LambdaContext, end_function: EndFunction) -> dict[str, Any]:
        """Process one event. Returns a report; raises when a retry can still help.

        Logs one INFO line per conversation ("conversation ended", with what happened to each
        action) and one ERROR line per failed action; everything else is DEBUG.
        """
        started = time.monotonic()
        self.idempotency_config.register_lambda_context(context)
        try:
            detail = parse_event(event, self.settings.stage)
        except InvalidEventError as err:
            return self._reject(event, err, context)
        logger.append_keys(conversation_id=detail.conversation_id)
        # the keys are the sender's own names: data, not quoted
        logger.debug("conversation received", extra={"state_key_count": len(detail.state)})
        # Planned before Powertools takes the record: an attempt stopped inside the End function then
        # leaves no record in progress, so its retry has nothing in doubt (the record's lease, once
        # taken, is the mark that actions may have been sent). A conversation a record already holds
        # (a duplicate, a twin still running) is not planned: Powertools answers it.
        held = self.guard.holds(record_key(detail.conversation_id))
        plan = None if held else self._plan(detail, end_function)
        try:
            report = self._process_waiting_for_twin(
                detail=detail.model_dump(mode="json"),
                model=detail,
                plan=plan,
                end_function=end_function,
                deadline=Deadline.from_context(context),
            )
        except IdempotencyValidationError:
            conflict = ConflictingDuplicateError(
                f"conversation {detail.conversation_id} was already received with different content; "
                "this event was not processed (compare both in the failed-events queue before replaying)"
            )
            return self._reject(event, conflict, context)
        if report.get("duplicate"):
            metrics.add_metric(name="DuplicateConversations", unit=MetricUnit.Count, value=1)
            statuses = {name: "already_done" for name in report.get("actions", {})}
            self._log_conversation(detail, "duplicate", statuses, started)
        return report

    def _process_waiting_for_twin(self, *, deadline: Deadline, **kwargs: Any) -> dict[str, Any]:
        """Process once; if a twin event of this conversation is in progress elsewhere, wait for it.

        A duplicate emission (or a replayed copy) can arrive while its twin is still running.
        Failing it would only send it round Lambda's retries and possibly into the failed-events
        queue; waiting (bounded by this invocation's deadline) returns the twin's stored result, or
        processes the conversation here if the twin failed and released it.
        """
        delay = 0.1
        while True:
            try:
                report: dict[str, Any] = self._process_once(deadline=deadline, **kwargs)
                return report
            except IdempotencyAlreadyInProgressError:
                if deadline.remaining() < TWIN_WAIT_MARGIN_SECONDS + delay:
                    raise
                if delay == 0.1:
                    logger.info("another invocation is processing this conversation; waiting for it to finish")
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _plan(self, model: ConversationEndedDetail, end_function: EndFunction) -> ActionPlan | Exception:
        """Run the End function: it plans actions; nothing is performed or written yet. What it raised
        is returned: raised under Powertools' guard, unless the conversation was processed before."""
        plan = ActionPlan(
            model, self.crm, self.follow_ups, self.notifier, default_phone_region=self.settings.default_phone_region
        )
        try:
            end_function(Conversation(model, plan))
        except Exception as exc:  # noqa: BLE001 - handed to _process, which reports and raises it
            return exc
        return plan

    @staticmethod
    def _raise_planning_error(exc: Exception) -> NoReturn:
        # Its text is the user's (it may quote the state): redacted, with where it was raised.
        error = describe_exception(exc)
        logger.error(
            "end_function raised; no action was performed, the event will be retried",
            extra={"error": error, "raised_at": where_raised(exc)},
        )
        metrics.add_metric(name="EndFunctionErrors", unit=MetricUnit.Count, value=1)
        raise EndFunctionError(f"end_function raised {error}") from exc

    def _process(
        self,
        detail: dict[str, Any],
        model: ConversationEndedDetail,
        plan: ActionPlan | Exception | None,
        end_function: EndFunction,
        deadline: Deadline,
    ) -> dict[str, Any]:
        """Under Powertools' guard: perform the plan; the report it stores carries the actions' results."""
        started = time.monotonic()
        prior = self.guard.prior(record_key(model.conversation_id))  # read when the record was taken
        if plan is None:  # the record that held it was released just before we took it: plan now
            plan = self._plan(model, end_function)
        if isinstance(plan, Exception):
            self._raise_planning_error(plan)
        outcomes = perform_actions(
            model.conversation_id, plan.planned, self.ledger, deadline, self.settings.action_concurrency, prior
        )
        failures = {o.name: o.error for o in outcomes if o.status == "failed" and o.error is not None}
        self._report_failures(outcomes)
        statuses: dict[str, str] = {o.name: o.status for o in outcomes}
        if failures:
            # Powertools releases its record when this raises; the release writes every outcome.
            self.guard.close_with(record_key(model.conversation_id), ledger_entries(outcomes))
            record_actions(model.conversation_id, ((o.name, o.status, o.seconds) for o in outcomes))
            self._log_conversation(model, "failed", statuses, started)
            raise ActionsFailedError(model.conversation_id, failures)
        record_conversation(model, [(o.name, o.status, o.seconds) for o in outcomes])
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


def _already_processed(response: Any, idempotent_data: DataRecord) -> Any:
    """Powertools' ``response_hook``: the stored report of a conversation processed before, marked so."""
    return {**response, "duplicate": True} if isinstance(response, dict) else response


def new_callers(settings: EndHandlerSettings) -> NewCallers:
    """``UnknownCallerPolicy`` with the caller lease in the idempotency table."""
    policy: UnknownCallerPolicy = "park" if settings.unknown_caller_policy == "park" else "create"
    return NewCallers(policy, CallerLeases(settings.idempotency_table))


#: HubSpot counts a request when it arrives; slots that fill the whole rolling window leave no room
#: for the network's jitter between two requests a window apart, so they leave 2 % of it.
GENERAL_HEADROOM = 0.98


def build_crm(settings: EndHandlerSettings) -> Crm:
    """The configured CRM adapter (only the one in use is imported: keeps cold starts short)."""
    http: dict[str, Any] = {"allow_loopback_http": settings.local_mode}
    if settings.crm_read_timeout is not None:
        http["read_timeout"] = settings.crm_read_timeout
    limiter = share(settings.crm_rate_limit, settings.reserved_concurrency)
    if limiter is not None:  # this environment's share of the CRM's limit, for every CRM client in it
        http["limiter"] = limiter
    if settings.crm_provider == "hubspot":
        from aftercall.crm.hubspot import DEFAULT_BASE_URL, HubSpotCrm
        from aftercall.crm.search_slots import SharedSlots

        if settings.crm_rate_limit:  # the rolling 10-s budget, in slots every environment shares
            http["limiter"] = SharedSlots(
                settings.idempotency_table,
                "hubspot-general",
                settings.crm_rate_limit * GENERAL_HEADROOM,
                whole_window=True,
            )
        if settings.crm_search_rate_limit:  # HubSpot's separate search budget (4/s per token), shared by all runs
            http["search_limiter"] = SharedSlots(
                settings.idempotency_table, "hubspot-search", settings.crm_search_rate_limit
            )
        credentials = SecretCredentials(settings.crm_secret_id, ("access_token",), settings.secret_max_age)
        return HubSpotCrm(
            credentials, settings.crm_base_url or DEFAULT_BASE_URL, new_callers=new_callers(settings), **http
        )
    if settings.crm_provider == "salesforce":
        from aftercall.crm import salesforce

        credentials = SecretCredentials(settings.crm_secret_id, salesforce.SECRET_KEYS, settings.secret_max_age)
        return salesforce.SalesforceCrm(
            credentials,
            settings.crm_base_url,
            new_callers=new_callers(settings),
            new_caller_object="Contact" if settings.new_caller_object == "Contact" else "Lead",
            **http,
        )
    if settings.crm_provider == "zendesk":
        from aftercall.crm import zendesk

        credentials = SecretCredentials(settings.crm_secret_id, zendesk.SECRET_KEYS, settings.secret_max_age)
        return zendesk.ZendeskCrm(credentials, settings.crm_base_url, new_callers=new_callers(settings), **http)
    if settings.crm_provider == "webhook":
        from aftercall.crm import webhook

        credentials = SecretCredentials(settings.crm_secret_id, webhook.SECRET_KEYS, settings.secret_max_age)
        return webhook.WebhookCrm(
            credentials, settings.crm_base_url, unknown_caller_policy=settings.unknown_caller_policy, **http
        )
    raise AssertionError(f"unreachable: provider {settings.crm_provider!r} passed EndHandlerSettings validation")
