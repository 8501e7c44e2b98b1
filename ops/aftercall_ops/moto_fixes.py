"""A fix for a moto thread-safety bug that loses SQS messages; apply it in any process running moto.

moto's ``Queue.delete_message`` rebuilds the queue's message list without holding the lock that
``Queue.add_message`` takes. Two overlapping requests on a threaded moto server (two
DeleteMessageBatch calls, or a delete and a send) can then undo each other: a deleted message
comes back, or a message just sent is lost. Real SQS never does this, and "nothing is lost" is
exactly what replay and the local stack are tested for, so processes that run moto in server mode
make deletes take the same lock. (Two overlapping receives may still return the same message:
that is SQS's own at-least-once contract, which replay handles.)
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_applied = False
_guard = threading.Lock()


def serialise_sqs_deletes() -> None:
    """Make moto's SQS deletes take the queue's message lock (idempotent; call before serving)."""
    global _applied
    with _guard:
        if _applied:
            return
        from moto.sqs.models import Queue

        original = Queue.delete_message

        @functools.wraps(original)
        def delete_message(self: Any, receipt_handle: str) -> None:
            with self._messages_lock:
                original(self, receipt_handle)

        Queue.delete_message = delete_message  # type: ignore[method-assign]
        _applied = True
