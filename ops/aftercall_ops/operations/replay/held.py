"""A replay pass's messages in SQS: every receipt handle each was received with, deleted after success,
the rest made visible again when the pass ends."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import botocore.exceptions

from aftercall_ops.operations.dlq import FailedEvent
from aftercall_ops.operations.replay.report import GONE, SQS_BATCH, ReplayReport
from aftercall_ops.operations.targets import Client, describe_aws_error


class HeldMessages:
    """The messages a pass holds invisible, by id; shares the pass's lock."""

    def __init__(self, sqs: Client, queue_url: str, lock: threading.Lock) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.lock = lock
        # message id -> every receipt handle it was received with, until deleted. Normally one; a
        # message received again (its visibility ran out, or a server that hands one message to two
        # concurrent receives, as moto does) has several, and only the newest one works.
        self.held: dict[str, list[str]] = {}
        self.deleted: set[str] = set()

    def hold(self, message: FailedEvent) -> None:
        """Remember a received message's handle (call with the lock held); a deleted one stays gone."""
        if message.message_id not in self.deleted:
            handles = self.held.setdefault(message.message_id, [])
            if message.receipt_handle not in handles:
                handles.append(message.receipt_handle)

    def delete(self, messages: Sequence[FailedEvent]) -> dict[str, str]:
        """DeleteMessageBatch, ten entries a call; returns message id -> error for those not deleted.

        A message with several receipt handles is deleted with each (the newest one is the one that
        counts, and which one is newest is not known when receives overlap).
        """
        with self.lock:
            pairs = [(m.message_id, h) for m in messages for h in self.held.get(m.message_id, [m.receipt_handle])]
        failures: dict[str, list[str]] = {}
        attempts: dict[str, int] = {}
        for start in range(0, len(pairs), SQS_BATCH):
            chunk = pairs[start : start + SQS_BATCH]
            for message_id, _ in chunk:
                attempts[message_id] = attempts.get(message_id, 0) + 1
            entries = [{"Id": str(i), "ReceiptHandle": handle} for i, (_, handle) in enumerate(chunk)]
            try:
                response = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                for message_id, _ in chunk:
                    failures.setdefault(message_id, []).append(describe_aws_error(exc) or str(exc))
                continue
            for failed in response.get("Failed", []):
                message_id = chunk[int(failed["Id"])][0]
                failures.setdefault(message_id, []).append(f"{failed.get('Code')}: {failed.get('Message', '')}")
        # A message is deleted if any of its handles was accepted.
        errors = {mid: reasons[-1] for mid, reasons in failures.items() if len(reasons) >= attempts[mid]}
        with self.lock:
            for message in messages:
                if message.message_id not in errors:
                    self.held.pop(message.message_id, None)
                    self.deleted.add(message.message_id)
        return errors

    def release(self, report: ReplayReport, visibility: int) -> None:
        """Make every held message visible again (ChangeMessageVisibilityBatch 0), ten entries a call."""
        with self.lock:
            pairs = [(message_id, handle) for message_id, handles in self.held.items() for handle in handles]
            several = {message_id for message_id, handles in self.held.items() if len(handles) > 1}
            self.held.clear()
        for start in range(0, len(pairs), SQS_BATCH):
            chunk = pairs[start : start + SQS_BATCH]
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0} for i, (_, handle) in enumerate(chunk)
            ]
            try:
                response = self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                report.release_failures.append(
                    f"{len(chunk)} message(s) stay invisible until their visibility timeout "
                    f"({visibility} s): {describe_aws_error(exc) or exc}"
                )
                continue
            for failed in response.get("Failed", []):
                message_id = chunk[int(failed["Id"])][0]
                if failed.get("Code") in GONE or message_id in several:
                    continue  # already visible, or an outdated handle of a message released by its newest one
                report.release_failures.append(
                    f"message {message_id} stays invisible until its visibility timeout: "
                    f"{failed.get('Code')}: {failed.get('Message', '')}"
                )
