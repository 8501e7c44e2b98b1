"""Scheduling a follow-up (EndHandler side): an EventBridge Scheduler one-time schedule each.

The schedule fires ``at(...)`` in UTC with ``ActionAfterCompletion: DELETE``, under a name derived
from the conversation and the follow-up's key, so a retry finds the schedule it made instead of
making another. It carries :meth:`FollowUp.payload` to the FollowUp function
(:mod:`aftercall.follow_ups.send`).

Time policy (documented in docs/actions.md):
* unparseable or without a time zone → ``ValueError`` when the End function plans it;
* more than a year ahead → ``ValueError`` when planned (Scheduler would accept it, nobody wants it);
* in the past by at most :data:`SEND_NOW_GRACE` → scheduled for one minute from now ("send now");
* further in the past → :class:`FollowUpTimeError`: the action fails with that reason and the event
  ends in the failed-events queue (a stale "see you tomorrow" SMS is worse than none).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from aftercall import aws
from aftercall.crm.base import CrmCall
from aftercall.errors import ConfigurationError, FollowUpTimeError
from aftercall.follow_ups import FollowUpKind

SEND_NOW_GRACE = timedelta(minutes=15)
MAX_AHEAD = timedelta(days=365)
#: Scheduler needs a time that is in the future when the call reaches it.
EARLIEST_LEAD = timedelta(minutes=1)


def parse_follow_up_time(at: datetime | str, now: datetime | None = None) -> datetime:
    """The follow-up time as an aware UTC datetime, or ``ValueError`` saying what is wrong."""
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"follow-up time {at!r} is not an ISO 8601 date-time") from None
    if not isinstance(at, datetime):
        raise ValueError(f"follow-up time must be a datetime or ISO 8601 string, not {type(at).__name__}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("follow-up time has no time zone; give one explicitly (e.g. 2026-11-25T17:00:00+01:00)")
    at = at.astimezone(UTC)
    if at - (now or datetime.now(UTC)) > MAX_AHEAD:
        raise ValueError(f"follow-up time {at.isoformat()} is more than {MAX_AHEAD.days} days ahead")
    return at


def schedule_name(conversation_id: str, key: str) -> str:
    """A Scheduler-valid name (≤ 64 of ``[0-9A-Za-z-_.]``), the same for every retry of this follow-up."""
    digest = hashlib.sha256(f"{conversation_id}#{key}".encode()).hexdigest()[:12]
    readable = re.sub(r"[^0-9A-Za-z\-_.]", "_", f"{key}-{conversation_id}")[:44]
    return f"fu-{readable}-{digest}"


@dataclass(frozen=True)
class FollowUp:
    conversation_id: str
    environment: str
    key: str
    kind: FollowUpKind
    at: datetime
    to: str
    message: str
    subject: str | None = None

    def payload(self) -> dict[str, Any]:
        """What the schedule carries to the FollowUp function (:class:`aftercall.follow_ups.send.FollowUpPayload`)."""
        return {
            "aftercall": "follow-up",
            "version": "1",
            "conversation_id": self.conversation_id,
            "environment": self.environment,
            "key": self.key,
            "kind": self.kind,
            "to": self.to,
            "message": self.message,
            "subject": self.subject,
            "scheduled_for": self.at.isoformat(),
        }


class FollowUpScheduler:
    """Creates the one-time schedules (End handler side)."""

    def __init__(
        self,
        group: str | None,
        target_arn: str | None,
        role_arn: str | None,
        dead_letter_arn: str | None = None,
        client: Any = None,
    ) -> None:
        """``client``: a Scheduler client other than the runtime's (``aftercall.testing`` records calls)."""
        if not (group and target_arn and role_arn):
            raise ConfigurationError(
                "follow-ups are not configured: FOLLOW_UP_SCHEDULE_GROUP, FOLLOW_UP_TARGET_ARN and "
                "SCHEDULER_ROLE_ARN must be set (template.yaml sets them)"
            )
        self.group = group
        self.target_arn = target_arn
        self.role_arn = role_arn
        self.dead_letter_arn = dead_letter_arn
        self._client = client

    def schedule(self, follow_up: FollowUp, call: CrmCall, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        if follow_up.at < now - SEND_NOW_GRACE:
            raise FollowUpTimeError(
                f"follow-up {follow_up.key!r} was due at {follow_up.at.isoformat()}, more than "
                f"{int(SEND_NOW_GRACE.total_seconds() // 60)} minutes ago; not sent (replay after changing the time)"
            )
        when = max(follow_up.at, now + EARLIEST_LEAD).replace(microsecond=0)
        name = schedule_name(follow_up.conversation_id, follow_up.key)
        client = self._client or aws.client("scheduler")
        target: dict[str, Any] = {
            "Arn": self.target_arn,
            "RoleArn": self.role_arn,
            "Input": json.dumps(follow_up.payload()),
            "RetryPolicy": {"MaximumEventAgeInSeconds": 3600, "MaximumRetryAttempts": 10},
        }
        if self.dead_letter_arn:  # Scheduler could not invoke the target: keep the payload
            target["DeadLetterConfig"] = {"Arn": self.dead_letter_arn}
        try:
            client.create_schedule(
                Name=name,
                GroupName=self.group,
                ScheduleExpression=f"at({when.strftime('%Y-%m-%dT%H:%M:%S')})",
                ScheduleExpressionTimezone="UTC",
                FlexibleTimeWindow={"Mode": "OFF"},
                ActionAfterCompletion="DELETE",
                Description=f"aftercall {follow_up.kind} follow-up for conversation {follow_up.conversation_id}",
                Target=target,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConflictException":
                raise
            # An earlier attempt created it (then timed out or failed before recording it).
            existing = client.get_schedule(Name=name, GroupName=self.group)
            return {"schedule": name, "group": self.group, "at": existing["ScheduleExpression"], "existing": True}
        return {
            "schedule": name,
            "group": self.group,
            "at": when.isoformat(),
            "sent_now": follow_up.at < now,
        }
