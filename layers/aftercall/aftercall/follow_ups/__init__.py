"""Follow-ups: a message sent at a time the End function chose, through EventBridge Scheduler.

Two sides, one per function: :mod:`aftercall.follow_ups.schedule` is the EndHandler's (plan the
time, create one one-time schedule per follow-up); :mod:`aftercall.follow_ups.send` is the
FollowUp function's (check the payload the schedule carried, send it once). The payload between
them is :meth:`~aftercall.follow_ups.schedule.FollowUp.payload`, checked by
:class:`~aftercall.follow_ups.send.FollowUpPayload`.
"""

from __future__ import annotations

from typing import Literal

FollowUpKind = Literal["sms", "email", "callback"]
FOLLOW_UP_KINDS: tuple[FollowUpKind, ...] = ("sms", "email", "callback")
