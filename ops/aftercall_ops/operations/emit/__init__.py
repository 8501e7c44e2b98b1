"""Put ``Conversation Ended`` events on the bus: read, check, batch, send, retry, report.

Every input problem (bad JSON with its line, a wrong environment, an entry over EventBridge's
256 KB) is found *before* anything is sent, so a refused run never leaves half a file on the bus.
Sending batches at most 10 entries per PutEvents call (and at most 256 KB per request), retries
the entries that come back in ``FailedEntries`` with bounded, jittered backoff, and reports each
entry that was still not accepted.

The package: :mod:`model`, :mod:`read`, :mod:`prepare`, :mod:`send`; this module is its public API.
"""

from aftercall_ops.operations.emit.model import (
    DEFAULT_RETRY,
    DEFAULT_SOURCE,
    ENVIRONMENTS,
    FATAL_CALL_ERRORS,
    MAX_BATCH_ENTRIES,
    MAX_INPUT_BYTES,
    MAX_REQUEST_BYTES,
    PERMANENT_ENTRY_ERRORS,
    RETRYABLE_CALL_ERRORS,
    EmitInputError,
    EmitReport,
    EntryFailure,
    EntryOutcome,
    PreparedEntry,
    RawItem,
    RetryPolicy,
)
from aftercall_ops.operations.emit.prepare import batches, entry_size, prepare
from aftercall_ops.operations.emit.read import generated, read_file, read_lines, read_stream
from aftercall_ops.operations.emit.send import FatalSendError, dry_run, put_batch, send

__all__ = [
    "DEFAULT_RETRY",
    "DEFAULT_SOURCE",
    "ENVIRONMENTS",
    "FATAL_CALL_ERRORS",
    "MAX_BATCH_ENTRIES",
    "MAX_INPUT_BYTES",
    "MAX_REQUEST_BYTES",
    "PERMANENT_ENTRY_ERRORS",
    "RETRYABLE_CALL_ERRORS",
    "EmitInputError",
    "EmitReport",
    "EntryFailure",
    "EntryOutcome",
    "FatalSendError",
    "PreparedEntry",
    "RawItem",
    "RetryPolicy",
    "batches",
    "dry_run",
    "entry_size",
    "generated",
    "prepare",
    "put_batch",
    "read_file",
    "read_lines",
    "read_stream",
    "send",
]
