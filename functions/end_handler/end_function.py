"""Your End function: runs once for every conversation that ended. Edit this file.

``conv.id``, ``conv.duration`` and ``conv.state.get(...)`` work as in the platform docs. Plan the
after-call work with ``conv.actions``; aftercall performs the actions concurrently after this
function returns, each exactly once per conversation, and retries only what failed.

    conv.actions.log_summary({...})                        # structured summary → CRM note
    conv.actions.open_ticket("subject", "details")         # support ticket
    conv.actions.log_disposition("interested")             # outbound outcome → lead status
    conv.actions.schedule_follow_up(at, "text", "sms")     # SMS / email / callback at a time
    conv.actions.notify("Potential lead", {...})           # message to the team's SNS topic

If this function raises, nothing is performed, the error is logged with the conversation id, and
the event is retried and then kept in the failed-events queue for ``aftercall replay``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aftercall.conversation import Conversation

#: Outbound outcomes worth telling the sales team about at once.
HOT_LEADS = ("interested", "meeting_booked", "converted")


def end_function(conv: Conversation) -> None:
    # Log metadata: a structured summary of the call, written to the CRM.
    metadata = {
        "conversation_id": conv.id,
        "duration": conv.duration,
        "topic": conv.state.get("last_topic", "Unknown"),
        "sentiment": conv.state.get("sentiment", "Neutral"),
        "resolution": conv.state.get("resolution", "unknown"),
    }
    conv.actions.log_summary(metadata)

    # Trigger external API: a support ticket when the agent flagged one.
    if conv.state.get("support_needed"):
        conv.actions.open_ticket(
            subject=conv.state.get("ticket_subject", f"Follow-up on {metadata['topic']}"),
            description=conv.state.get("issue_description", ""),
            priority=conv.state.get("ticket_priority", "MEDIUM"),
        )

    # Schedule a follow-up if necessary: a callback request for the next morning.
    if conv.state.get("follow_up_required") and conv.customer_phone:
        next_morning = (conv.ended_at + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
        conv.actions.schedule_follow_up(
            at=max(next_morning, _soon()), message=f"Call back about {metadata['topic']}", kind="callback"
        )

    # Outbound calls: record the disposition on the lead, send the information they asked for,
    # and tell the sales team about hot leads.
    if conv.direction == "outbound":
        disposition = conv.state.get("disposition", "connected")
        conv.actions.log_disposition(disposition)
        if disposition == "info_requested" and conv.customer_email:
            conv.actions.schedule_follow_up(
                at=max(conv.ended_at + timedelta(minutes=10), _soon()),
                message="Thanks for your time on the phone. As promised, here is the information you asked for.",
                kind="email",
                subject="The information you asked for",
            )
        if disposition in HOT_LEADS:
            conv.actions.notify(f"Potential lead: {disposition}", {**metadata, "agent": conv.agent_id})


def _soon() -> datetime:
    """A replayed or late event still sends its follow-up, a little from now rather than in the past."""
    return datetime.now(UTC) + timedelta(minutes=2)
