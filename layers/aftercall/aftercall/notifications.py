"""Notifications: a readable conversation summary published to the stack's SNS topic.

For "notify the sales team about potential leads". The topic is KMS-encrypted; subscribers (an
email list, a chat webhook through a Lambda, …) are configured on the topic, not in code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aftercall import aws
from aftercall.crm.base import CrmCall
from aftercall.errors import ConfigurationError


@dataclass(frozen=True)
class Notification:
    conversation_id: str
    subject: str
    lines: tuple[tuple[str, str], ...]

    def text(self) -> str:
        body = "\n".join(f"{label}: {value}" for label, value in self.lines)
        return f"{self.subject}\n\n{body}\n\nConversation: {self.conversation_id}\n"


class Notifier:
    def __init__(self, topic_arn: str | None) -> None:
        if not topic_arn:
            raise ConfigurationError("notifications are not configured: NOTIFICATIONS_TOPIC_ARN is not set")
        self.topic_arn = topic_arn

    def publish(self, notification: Notification, call: CrmCall) -> dict[str, Any]:
        """Publish once; the action ledger keeps a retry from publishing again."""
        response = aws.client("sns").publish(
            TopicArn=self.topic_arn,
            Subject=notification.subject[:100],
            Message=notification.text(),
            MessageAttributes={"conversation_id": {"DataType": "String", "StringValue": notification.conversation_id}},
        )
        return {"kind": "notification", "message_id": response["MessageId"]}
