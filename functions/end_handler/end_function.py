"""Your End function: runs once for every conversation that ended. Edit this file.

``conv.id``, ``conv.duration`` and ``conv.state.get(...)`` work as in the platform docs. Plan the
after-call work with ``conv.actions``; aftercall performs the actions concurrently after this
function returns, each exactly once per conversation, and retries only what failed.

    conv.actions.log_summary({...})                 # structured summary → CRM note
    conv.actions.open_ticket("subject", "details")  # support ticket
    conv.actions.log_disposition("interested")      # outbound outcome → lead status

If this function raises, nothing is performed, the error is logged with the conversation id, and
the event is retried and then kept in the failed-events queue for ``aftercall replay``.
"""

from __future__ import annotations

from aftercall.conversation import Conversation


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

    # Outbound calls: record the disposition on the lead.
    if conv.direction == "outbound":
        conv.actions.log_disposition(conv.state.get("disposition", "connected"))
