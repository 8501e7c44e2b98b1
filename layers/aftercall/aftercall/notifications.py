"""Notifications: a readable conversation summary published to the stack's SNS topic.

For "notify the sales team about potential leads". The topic is KMS-encrypted; subscribers (an
email list, a chat webhook through a Lambda, …) are configured on the topic, not in code.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, replace
from typing import Any

from aftercall import aws
from aftercall.crm.base import CrmCall
from aftercall.errors import ConfigurationError

#: SNS refuses a subject that is not ASCII, holds a line break or control character, or is over 100 characters.
MAX_SNS_SUBJECT = 100


def sns_subject(subject: str) -> str:
    """``subject`` as SNS accepts it: accents folded to ASCII, whitespace runs to one space, cut to 100.

    The message body starts with the subject as given, so nothing is lost.
    """
    folded = unicodedata.normalize("NFKD", subject).encode("ascii", "ignore").decode("ascii")
    printable = "".join(char if char.isprintable() else " " for char in folded)
    return " ".join(printable.split())[:MAX_SNS_SUBJECT].rstrip() or "aftercall notification"


@dataclass(frozen=True)
class Notification:
    conversation_id: str
    subject: str
    lines: tuple[tuple[str, str], ...]

    def with_line(self, label: str, value: str) -> Notification:
        return replace(self, lines=(*self.lines, (label, value)))

    def with_subject(self, subject: str) -> Notification:
        return replace(self, subject=subject)

    def text(self) -> str:
        body = "\n".join(f"{label}: {value}" for label, value in self.lines)
        return f"{self.subject}\n\n{body}\n\nConversation: {self.conversation_id}\n"


class Notifier:
    def __init__(self, topic_arn: str | None, client: Any = None) -> None:
        """``client``: an SNS client other than the runtime's (``aftercall.testing`` records calls)."""
        if not topic_arn:
            raise ConfigurationError("notifications are not configured: NOTIFICATIONS_TOPIC_ARN is not set")
        self.topic_arn = topic_arn
        self._client = client

    def publish(self, notification: Notification, call: CrmCall) -> dict[str, Any]:
        """Publish once; the action ledger keeps a retry from publishing again."""
        response = (self._client or aws.client("sns")).publish(
            TopicArn=self.topic_arn,
            Subject=sns_subject(notification.subject),
            Message=notification.text(),
            MessageAttributes={"conversation_id": {"DataType": "String", "StringValue": notification.conversation_id}},
        )
        return {"kind": "notification", "message_id": response["MessageId"]}
