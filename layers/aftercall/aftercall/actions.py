"""Actions: the side effects an End function asks for, one line each, run after it returns.

``end_function`` only *plans* actions (``conv.actions.log_summary(...)``); the runtime then
performs them concurrently, each guarded by the action ledger. So the invocation takes about as
long as its slowest action, a failure in one neither cancels nor repeats the others, and a retry
redoes only the actions that did not complete.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

from aftercall.crm.base import (
    DISPOSITIONS,
    Crm,
    CrmCall,
    Customer,
    Disposition,
    FindsCallers,
    SummaryNote,
    SupportTicket,
    TicketPriority,
)
from aftercall.deadline import Deadline
from aftercall.errors import AftercallError, ConfigurationError, CrmUnavailableError, UnknownContactError
from aftercall.ledger import ActionLedger, Prior, completed_entry, failed_entry
from aftercall.models.event import E164, EMAIL, ConversationEndedDetail
from aftercall.notifications import Notification, Notifier
from aftercall.phones import normalise_phone

if TYPE_CHECKING:
    # Imported when a follow-up is planned: its payload model costs every cold start a few
    # milliseconds (bench/coldstart.py), and most End functions never schedule one.
    from aftercall.follow_ups import FollowUpKind
    from aftercall.follow_ups.schedule import FollowUpScheduler

#: Summary fields taken from ``conv.state`` when the End function passes no summary of its own.
SUMMARY_STATE_KEYS = ("intent", "last_topic", "topic", "resolution", "resolved", "sentiment", "summary")
#: ``conv.state`` keys a new caller's name is read from (the first one present wins).
FIRST_NAME_KEYS = ("first_name", "firstname", "given_name")
LAST_NAME_KEYS = ("last_name", "lastname", "family_name")
FULL_NAME_KEYS = ("customer_name", "caller_name", "name")
#: A notification is not published with less time than this left (see ``ActionPlan._publish``).
PUBLISH_MARGIN_SECONDS = 1.0
#: What the FollowUp function accepts (:class:`aftercall.follow_ups.send.FollowUpPayload`), checked when planned.
MAX_FOLLOW_UP_KEY = 64
_ACTION_KEY = re.compile(rf"^[A-Za-z][A-Za-z0-9_.\-]{{0,{MAX_FOLLOW_UP_KEY - 1}}}$")
MAX_FOLLOW_UP_SUBJECT = 200


@dataclass(frozen=True)
class Action:
    """One planned side effect; ``name`` is unique within a conversation (its ledger entry).

    ``repeatable``: performing it again cannot make a second effect (a lead status set to a value,
    a schedule whose name is derived from the conversation), so its result may wait for the
    conversation's last ledger write instead of a write of its own.
    """

    name: str
    perform: Callable[[CrmCall], dict[str, Any]]
    #: What the End function asked for (a SummaryNote, FollowUp, ...): for tests and ``aftercall try``.
    arguments: object = None
    repeatable: bool = False


@dataclass(frozen=True)
class ActionOutcome:
    name: str
    status: Literal["done", "already_done", "failed"]
    seconds: float
    result: dict[str, Any] | None = None
    error: BaseException | None = None
    #: Whether the ledger already has it (else it rides on the stored report, or the closing write).
    recorded: bool = False
    unanswered_write_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status, "seconds": round(self.seconds, 3)}
        if self.result is not None:
            data["result"] = self.result
        if self.error is not None:
            data["error"] = f"{type(self.error).__name__}: {self.error}"
        return data


class ActionPlan:
    """``conv.actions``: each method validates its arguments at once and plans one action."""

    def __init__(
        self,
        detail: ConversationEndedDetail,
        crm: Callable[[], Crm],
        follow_ups: Callable[[], FollowUpScheduler] | None = None,
        notifier: Callable[[], Notifier] | None = None,
        *,
        default_phone_region: str | None = None,
    ) -> None:
        self._detail = detail
        self._crm = crm
        self._follow_ups = follow_ups or _not_configured("follow-ups")
        self._notifier = notifier or _not_configured("notifications")
        self._actions: dict[str, Action] = {}
        self.customer = customer_of(detail, default_phone_region)

    @property
    def planned(self) -> tuple[Action, ...]:
        return tuple(self._actions.values())

    def log_summary(self, summary: Mapping[str, Any] | None = None) -> None:
        """Write a structured call summary as a CRM note on the customer's record."""
        data = _plain(summary) if summary is not None else self.default_summary()
        try:
            json.dumps(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"log_summary: the summary must be JSON data ({exc})") from None
        note = SummaryNote(self._detail.conversation_id, self.customer, self._detail.ended_at, data)
        self._add("crm_summary", lambda call: self._crm().log_summary(note, call).to_json(), note)

    def open_ticket(self, subject: str, description: str = "", priority: TicketPriority = "MEDIUM") -> None:
        """Open a support ticket for the customer."""
        if not subject or not subject.strip():
            raise ValueError("open_ticket: subject must not be empty")
        if priority not in get_args(TicketPriority):
            raise ValueError(f"open_ticket: priority must be one of {', '.join(get_args(TicketPriority))}")
        ticket = SupportTicket(
            self._detail.conversation_id, self.customer, subject.strip()[:255], description[:10_000], priority
        )
        self._add("support_ticket", lambda call: self._crm().open_ticket(ticket, call).to_json(), ticket)

    def log_disposition(self, disposition: str, note: str | None = None) -> None:
        """Record an outbound call's outcome on the lead (its CRM lead status)."""
        if disposition not in DISPOSITIONS:
            raise ValueError(
                f"log_disposition: unknown disposition (a {type(disposition).__name__} of {_size(disposition)}; "
                f"not quoted, it may be personal data); use one of {', '.join(sorted(DISPOSITIONS))}"
            )
        record = Disposition(self._detail.conversation_id, self.customer, disposition, note)
        self._add(
            "disposition", lambda call: self._crm().log_disposition(record, call).to_json(), record, repeatable=True
        )

    def schedule_follow_up(
        self,
        at: datetime | str,
        message: str,
        kind: FollowUpKind = "sms",
        *,
        to: str | None = None,
        subject: str | None = None,
        key: str | None = None,
    ) -> None:
        """Schedule an SMS, email or callback request for ``at`` (aware datetime or ISO 8601 with zone).

        ``to`` defaults to the customer's phone (sms, callback) or email (email). ``key`` tells
        apart several follow-ups of one kind (default: the kind).
        """
        from aftercall.follow_ups import FOLLOW_UP_KINDS
        from aftercall.follow_ups.schedule import FollowUp, parse_follow_up_time

        if kind not in FOLLOW_UP_KINDS:
            raise ValueError(f"schedule_follow_up: kind must be one of {', '.join(FOLLOW_UP_KINDS)}")
        when = parse_follow_up_time(at)
        recipient = to or (self.customer.email if kind == "email" else self.customer.phone)
        if not recipient:
            missing = "email address" if kind == "email" else "phone number"
            raise ValueError(f"schedule_follow_up: this conversation has no customer {missing}; pass to=...")
        recipient = _follow_up_recipient(kind, recipient)
        if not message or not message.strip():
            raise ValueError("schedule_follow_up: message must not be empty")
        name = _action_key("schedule_follow_up", key) or kind
        follow_up = FollowUp(
            self._detail.conversation_id,
            self._detail.environment,
            name,
            kind,
            when,
            recipient,
            message.strip()[:1600],
            (subject.strip()[:MAX_FOLLOW_UP_SUBJECT] or None) if subject else None,
        )
        self._add(
            f"follow_up:{name}", lambda call: self._follow_ups().schedule(follow_up, call), follow_up, repeatable=True
        )

    def notify(self, subject: str, details: Mapping[str, Any] | None = None, *, key: str = "team") -> None:
        """Publish a readable summary of this conversation to the notifications topic."""
        if not subject or not subject.strip():
            raise ValueError("notify: subject must not be empty")
        data = _plain(details) if details is not None else self.default_summary()
        lines = tuple((str(label), str(value)) for label, value in data.items())
        notification = Notification(self._detail.conversation_id, subject.strip(), lines)
        self._add(
            f"notification:{_action_key('notify', key)}",
            lambda call: self._publish(notification, call),
            notification,
        )

    def _publish(self, notification: Notification, call: CrmCall) -> dict[str, Any]:
        flagged = self._flag_new_lead(notification, call)
        if call.deadline.remaining() < PUBLISH_MARGIN_SECONDS:
            # Published this late, the invocation could stop before the ledger records it, and the
            # retry would publish again: leave it to the retry instead.
            raise CrmUnavailableError("too little time left in this invocation to publish the notification once")
        return self._notifier().publish(flagged, call)

    def _flag_new_lead(self, notification: Notification, call: CrmCall) -> Notification:
        """Say in the notification whether this conversation's caller is a new lead (their CRM record
        was created for it). Shares the CRM actions' lookup; a CRM failure does not stop the message."""
        crm = None
        try:
            crm = self._crm()
            if not isinstance(crm, FindsCallers):
                return notification
            match = crm.caller(self.customer, self._detail.conversation_id, call)
        except UnknownContactError:
            return notification.with_line("New lead", "no (not in the CRM)")
        except AftercallError as exc:
            return notification.with_line("New lead", f"unknown ({type(exc).__name__})")
        if not match.is_new_lead(self._detail.conversation_id):
            return notification
        created = f"yes: {crm.name} record {match.record_id} created for this caller"
        flagged = notification.with_line("New lead", created)
        return flagged.with_subject(f"New lead: {notification.subject}")

    def default_summary(self) -> dict[str, Any]:
        detail = self._detail
        summary: dict[str, Any] = {
            "conversation_id": detail.conversation_id,
            "direction": detail.direction,
            "channel": detail.channel,
            "duration_seconds": detail.duration_seconds,
            "ended_reason": detail.ended_reason,
            "agent_id": detail.agent_id,
        }
        summary.update({key: detail.state[key] for key in SUMMARY_STATE_KEYS if key in detail.state})
        return summary

    def _add(
        self, name: str, perform: Callable[[CrmCall], dict[str, Any]], arguments: object, *, repeatable: bool = False
    ) -> None:
        if name in self._actions:
            raise ValueError(f"action {name!r} was already planned for this conversation; plan it once")
        self._actions[name] = Action(name, perform, arguments, repeatable)


def customer_of(detail: ConversationEndedDetail, default_phone_region: str | None = None) -> Customer:
    """The customer as CRMs look them up: the number in E.164 (read with ``DefaultPhoneRegion``
    when it has no ``+``), and the name the agent collected, if any, for a new caller's record."""
    first, last = _state_text(detail.state, FIRST_NAME_KEYS), _state_text(detail.state, LAST_NAME_KEYS)
    if first is None and last is None and (full := _state_text(detail.state, FULL_NAME_KEYS)):
        first, _, rest = full.partition(" ")
        last = rest.strip() or None
    return Customer(
        phone=normalise_phone(detail.customer_phone, default_phone_region),
        email=detail.customer_email,
        first_name=first,
        last_name=last,
    )


def _state_text(state: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = state.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:100]
    return None


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    """A plain copy: nested mappings (``conv.state.get("x")`` returns read-only ``State`` views for
    objects, which ``json.dumps`` cannot take) become dicts, tuples become lists."""

    def plain(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [plain(item) for item in value]
        return value

    return {key: plain(value) for key, value in data.items()}


def _size(value: object) -> str:
    """How big a value is, for an error that must not quote it."""
    return f"{len(value)} characters" if isinstance(value, str) else "unknown size"


def _action_key(action: str, key: str | None) -> str | None:
    """A ``key=`` that tells actions apart: a label written in code, never data.

    It names the action in logs, ledger items and schedule names, so it must not be able to carry
    a phone number or an email address: a letter first, then letters, digits, ``_``, ``-``, ``.``.
    """
    if key is None:
        return None
    if not isinstance(key, str) or not _ACTION_KEY.match(key):
        raise ValueError(
            f"{action}: key must be a label of at most {MAX_FOLLOW_UP_KEY} characters: a letter, then letters, "
            "digits, '_', '-' or '.' (not quoted: it may be personal data)"
        )
    return key


def _follow_up_recipient(kind: FollowUpKind, to: str) -> str:
    """The recipient as the FollowUp function will need it (checked now, not when it comes due)."""
    if kind == "email":
        address = to.strip().lower()
        if not EMAIL.match(address):
            raise ValueError("schedule_follow_up: to= must be an email address such as name@example.com")
        return address
    number = re.sub(r"[\s().\-]", "", to)
    if not E164.match(number):
        raise ValueError("schedule_follow_up: to= must be an E.164 phone number such as +14155550100")
    return number


def _not_configured(what: str) -> Callable[[], Any]:
    def fail() -> Any:
        raise ConfigurationError(f"{what} are not available in this runtime")

    return fail


def perform_actions(
    conversation_id: str,
    actions: tuple[Action, ...],
    ledger: ActionLedger,
    deadline: Deadline,
    max_concurrency: int | None = None,
    prior: Prior | None = None,
) -> list[ActionOutcome]:
    """Perform the planned actions concurrently; never raises for an action's own failure.

    ``prior`` is what earlier attempts left (None: nothing). An action done before is not
    performed again. One that completes while others still run is recorded in the ledger at once,
    unless it is ``repeatable``; the results of the last one to finish and of the repeatable ones
    ride on the report Powertools stores when the conversation completes, and if it fails, the
    ledger's closing write keeps every outcome not written yet (:func:`ledger_entries`).
    ``max_concurrency=1`` runs them one after another (the platform docs' way; kept for the
    side-by-side benchmark in bench/fanout.py).
    """
    if not actions:
        return []
    prior = prior or Prior()
    todo = [action for action in actions if not prior.claim(action.name).done]
    pending = _Countdown(len(todo))
    workers = min(len(actions), max_concurrency or len(actions))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="action") as pool:
        futures = [
            pool.submit(_perform_one, conversation_id, action, ledger, deadline, prior, pending) for action in actions
        ]
        return [future.result() for future in futures]


def ledger_entries(outcomes: list[ActionOutcome]) -> dict[str, dict[str, Any]]:
    """The outcomes the ledger does not have yet, for the conversation's last write."""
    entries: dict[str, dict[str, Any]] = {}
    for outcome in outcomes:
        if outcome.status == "done" and not outcome.recorded and outcome.result is not None:
            entries[outcome.name] = completed_entry(outcome.result)
        elif outcome.status == "failed":
            error = f"{type(outcome.error).__name__}: {outcome.error}"
            entries[outcome.name] = failed_entry(error, outcome.unanswered_write_at)
    return entries


class _Countdown:
    """How many actions are still running: the last one to finish leaves its result to the last write."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._lock = threading.Lock()

    def finished(self) -> bool:
        """One action finished; True when none is left running."""
        with self._lock:
            self._count -= 1
            return self._count <= 0


def _perform_one(
    conversation_id: str, action: Action, ledger: ActionLedger, deadline: Deadline, prior: Prior, pending: _Countdown
) -> ActionOutcome:
    started = time.monotonic()
    claim = prior.claim(action.name)
    if claim.done:
        return ActionOutcome(action.name, "already_done", time.monotonic() - started, result=claim.result)
    call = CrmCall(deadline=deadline, recovering=claim.recovering, unanswered_write_at=claim.unanswered_write_at)
    try:
        result = action.perform(call)
    except Exception as exc:  # noqa: BLE001 - kept as this action's failure; the others go on
        pending.finished()
        return ActionOutcome(
            action.name,
            "failed",
            time.monotonic() - started,
            error=exc,
            unanswered_write_at=call.last_unanswered_write,
        )
    recorded = False
    if not pending.finished() and not action.repeatable:
        try:
            ledger.record(conversation_id, action.name, result)
            recorded = True
        except Exception:  # noqa: BLE001 - not lost: the conversation's last write carries it
            recorded = False
    return ActionOutcome(action.name, "done", time.monotonic() - started, result=result, recorded=recorded)
