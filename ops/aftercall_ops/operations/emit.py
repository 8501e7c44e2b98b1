"""Put ``Conversation Ended`` events on the bus: read, check, batch, send, retry, report.

Every input problem (bad JSON with its line, a wrong environment, an entry over EventBridge's
256 KB) is found *before* anything is sent, so a refused run never leaves half a file on the bus.
Sending batches at most 10 entries per PutEvents call (and at most 256 KB per request), retries
the entries that come back in ``FailedEntries`` with bounded, jittered backoff, and reports each
entry that was still not accepted.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import botocore.exceptions

from aftercall.models.event import DETAIL_TYPE, MAX_EVENT_BYTES, MAX_STATE_DEPTH
from aftercall_ops.operations.targets import Client, describe_aws_error

#: The template's default ``EventSource``: used only when neither ``--source`` nor the stack says.
DEFAULT_SOURCE = "aftercall.platform"
MAX_BATCH_ENTRIES = 10
#: PutEvents also limits the whole request to 256 KB, so batches stay under it too.
MAX_REQUEST_BYTES = MAX_EVENT_BYTES
ENVIRONMENTS = ("sandbox", "live")
#: The most one input (a file, standard input) may hold: 400 events of the largest size. Every read
#: stops here, so a path to something endless is refused instead of filling the memory.
MAX_INPUT_BYTES = 100 * 1024 * 1024

#: Entry error codes that will fail the same way on every retry.
PERMANENT_ENTRY_ERRORS = frozenset(
    {
        "MalformedDetail",
        "InvalidArgument",
        "ValidationException",
        "AccessDeniedException",
        "NotAuthorizedForSourceException",
        "NotAuthorizedForDetailTypeException",
        "ResourceNotFoundException",
    }
)
#: Call-level error codes worth retrying with backoff; any other call error fails the batch.
RETRYABLE_CALL_ERRORS = frozenset(
    {"ThrottlingException", "Throttling", "InternalException", "InternalFailure", "ServiceUnavailable"}
)
#: Call-level errors that will fail every other batch the same way: stop sending.
FATAL_CALL_ERRORS = frozenset(
    {
        "ResourceNotFoundException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
    }
)


class EmitInputError(ValueError):
    """The input cannot be sent as it is; nothing was sent. ``problems`` lists every one found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:20]
        more = f"\n  … and {len(self.problems) - len(shown)} more" if len(self.problems) > len(shown) else ""
        super().__init__("nothing was sent:\n  " + "\n  ".join(shown) + more)


@dataclass(frozen=True)
class RawItem:
    """One JSON value read from an input, with where it came from (for error messages)."""

    origin: str
    value: Any


@dataclass(frozen=True)
class PreparedEntry:
    """A PutEvents entry ready to send, its size as EventBridge counts it, and its origin."""

    origin: str
    conversation_id: str | None
    entry: dict[str, Any]
    size: int


@dataclass(frozen=True)
class EntryFailure:
    """An entry that EventBridge did not accept, after the retries."""

    origin: str
    conversation_id: str | None
    error_code: str
    error_message: str
    attempts: int

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "conversation_id": self.conversation_id,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "attempts": self.attempts,
        }


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter, for entries and for throttled calls."""

    max_attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 5.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class EntryOutcome:
    """What happened to one entry of a batch: its event id, or why it was not accepted."""

    event_id: str | None
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 1

    @property
    def accepted(self) -> bool:
        return self.event_id is not None


@dataclass
class EmitReport:
    """The result of ``aftercall emit``; ``ok`` is False when any entry was not accepted."""

    total: int
    dry_run: bool
    batches: int
    accepted: int = 0
    retried_entries: int = 0
    api_calls: int = 0
    seconds: float = 0.0
    failures: list[EntryFailure] = field(default_factory=list)
    largest_entry_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "total": self.total,
            "accepted": self.accepted,
            "not_accepted": len(self.failures),
            "batches": self.batches,
            "retried_entries": self.retried_entries,
            "api_calls": self.api_calls,
            "seconds": round(self.seconds, 3),
            "largest_entry_bytes": self.largest_entry_bytes,
            "failures": [failure.to_json() for failure in self.failures],
        }


# ---------------------------------------------------------------------------------------------- reading


def _too_much(name: str) -> EmitInputError:
    return EmitInputError(
        [
            f"{name}: over the {MAX_INPUT_BYTES:,}-byte limit for one input (is it the right file? "
            "/dev/zero, a FIFO or a stream that never ends?); split large inputs into several files"
        ]
    )


def _loads(text: str, where: str, *, one_line: bool = False) -> Any:
    """``json.loads`` whose every failure on input is one line naming ``where`` (ValueError)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"column {exc.colno}" if one_line else f"line {exc.lineno}, column {exc.colno}"
        raise ValueError(f"{where}: invalid JSON at {at}: {exc.msg}") from None
    except RecursionError:
        raise ValueError(
            f"{where}: the JSON nests too deep to read (an event nests {MAX_STATE_DEPTH} levels at most)"
        ) from None
    except ValueError as exc:  # e.g. an integer over Python's 4,300-digit conversion limit
        raise ValueError(f"{where}: JSON that cannot be read ({str(exc)[:120]})") from None


def read_file(path: Path) -> list[RawItem]:
    """The JSON values in a file: one value, a list of values, or JSON lines (``.jsonl``/``.ndjson``).

    At most :data:`MAX_INPUT_BYTES` are read: a path to something endless (``/dev/zero``, a FIFO
    whose writer never stops) ends with a clear error, not when the machine runs out of memory.
    """
    name = str(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    except FileNotFoundError:
        raise EmitInputError([f"{name}: no such file"]) from None
    except IsADirectoryError:
        raise EmitInputError([f"{name}: is a directory; pass the files in it (e.g. {name}/*.json)"]) from None
    except OSError as exc:
        raise EmitInputError([f"{name}: cannot be read ({exc})"]) from None
    if len(data) > MAX_INPUT_BYTES:
        raise _too_much(name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EmitInputError([f"{name}: cannot be read (not UTF-8 at byte {exc.start})"]) from None
    if path.suffix in (".jsonl", ".ndjson"):
        return read_lines(text.splitlines(), name)
    try:
        value = _loads(text, name)
    except ValueError as exc:
        raise EmitInputError([str(exc)]) from None
    if isinstance(value, list):
        return [RawItem(f"{name}[{index}]", item) for index, item in enumerate(value)]
    return [RawItem(name, value)]


def read_lines(lines: Iterable[str], name: str = "stdin") -> list[RawItem]:
    """One JSON value per non-blank line; every malformed line is reported with its number."""
    items: list[RawItem] = []
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            items.append(RawItem(f"{name} line {number}", _loads(line, f"{name} line {number}", one_line=True)))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise EmitInputError(problems)
    return items


def read_stream(stream: TextIO, name: str = "stdin") -> list[RawItem]:
    """JSON lines from a text stream (standard input), at most :data:`MAX_INPUT_BYTES` of it."""
    text = stream.read(MAX_INPUT_BYTES + 1)
    if len(text) > MAX_INPUT_BYTES:
        raise _too_much(name)
    return read_lines(text.splitlines(), name)


def generated(count: int, *, seed: int | None, duplicates: float, invalid: float, environment: str) -> list[RawItem]:
    """``count`` synthetic details from :func:`aftercall_ops.generate.conversations`."""
    from aftercall_ops.generate import conversations

    details = conversations(count, seed=seed, duplicates=duplicates, invalid=invalid, environment=environment)
    return [RawItem(f"generated #{index + 1}", detail) for index, detail in enumerate(details)]


# ---------------------------------------------------------------------------------------------- preparing


def entry_size(entry: dict[str, Any]) -> int:
    """The entry's size exactly as EventBridge computes it for the 256 KB limit.

    Per "Calculating PutEvents event entry size": Time counts 14 bytes when present; Source,
    DetailType, Detail and each Resources element count their UTF-8 bytes. (The event delivered
    to targets is larger, but the limit applies to this figure.)
    """
    size = 14 if entry.get("Time") is not None else 0
    for key in ("Source", "DetailType", "Detail"):
        value = entry.get(key)
        if value is not None:
            size += len(str(value).encode("utf-8"))
    for resource in entry.get("Resources") or ():
        if resource is not None:
            size += len(str(resource).encode("utf-8"))
    return size


def prepare(
    items: Sequence[RawItem],
    *,
    bus: str,
    source: str | None,
    environment: str | None,
    validate: bool = False,
) -> list[PreparedEntry]:
    """Turn read values into PutEvents entries, or raise :class:`EmitInputError` listing every problem.

    A value is an EventBridge envelope (has ``detail-type``/``detail``) or a bare detail. The
    detail's ``environment`` is set to ``environment`` when missing and must equal it when present,
    so a sandbox run can never put a live event on the bus by accident.
    """
    if environment is not None and environment not in ENVIRONMENTS:
        raise EmitInputError([f"--environment must be one of {', '.join(ENVIRONMENTS)}, got {environment!r}"])
    problems: list[str] = []
    entries: list[PreparedEntry] = []
    for item in items:
        try:
            entries.append(_prepare_one(item, bus=bus, source=source, environment=environment, validate=validate))
        except ValueError as exc:
            problems.append(f"{item.origin}: {exc}")
        except RecursionError:
            problems.append(f"{item.origin}: the event nests too deep (at most {MAX_STATE_DEPTH} levels)")
    if problems:
        raise EmitInputError(problems)
    return entries


def _prepare_one(
    item: RawItem, *, bus: str, source: str | None, environment: str | None, validate: bool
) -> PreparedEntry:
    value = item.value
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object (an event or its detail), got {type(value).__name__}")
    resources: list[str] = []
    if "detail-type" in value or "detail" in value:
        detail_type = value.get("detail-type")
        if detail_type != DETAIL_TYPE:
            raise ValueError(f"detail-type is {detail_type!r}; aftercall only emits {DETAIL_TYPE!r} events")
        detail = value.get("detail")
        if not isinstance(detail, dict):
            raise ValueError("the event's detail must be a JSON object")
        event_source = source or value.get("source") or DEFAULT_SOURCE
        raw_resources = value.get("resources") or []
        if not isinstance(raw_resources, list) or not all(isinstance(r, str) for r in raw_resources):
            raise ValueError("the event's resources must be a list of strings")
        resources = raw_resources
    else:
        detail = value
        event_source = source or DEFAULT_SOURCE
    detail = dict(detail)
    found = detail.get("environment")
    if environment is not None:
        if found is None:
            detail["environment"] = environment
        elif found != environment:
            raise ValueError(
                f"detail.environment is {found!r} but the target is {environment!r}; "
                f"fix the event or pass --environment {found} for the matching stack"
            )
    elif found is None:
        raise ValueError("detail.environment is missing; pass --environment sandbox|live (or --stack) to set it")
    if validate:
        _validate(detail)
    conversation_id = detail.get("conversation_id")
    entry: dict[str, Any] = {
        "Source": str(event_source),
        "DetailType": DETAIL_TYPE,
        "Detail": json.dumps(detail, ensure_ascii=False, separators=(",", ":"), allow_nan=False),
        "EventBusName": bus,
    }
    if resources:
        entry["Resources"] = resources
    size = entry_size(entry)
    if size > MAX_EVENT_BYTES:
        raise ValueError(
            f"entry is {size:,} bytes, over EventBridge's {MAX_EVENT_BYTES:,}-byte limit "
            f"(conversation {conversation_id}); shrink conv.state or store the bulk elsewhere (e.g. S3) "
            "and put a reference in the event"
        )
    return PreparedEntry(item.origin, conversation_id if isinstance(conversation_id, str) else None, entry, size)


def _validate(detail: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from aftercall.handler import describe_validation_error
    from aftercall.models.event import ConversationEndedDetail

    try:
        ConversationEndedDetail.model_validate(detail)
    except ValidationError as exc:
        raise ValueError(f"not a valid detail: {describe_validation_error(exc)}") from None


def batches(entries: Sequence[PreparedEntry]) -> Iterator[list[PreparedEntry]]:
    """Consecutive batches of at most 10 entries and at most 256 KB in total."""
    batch: list[PreparedEntry] = []
    batch_bytes = 0
    for entry in entries:
        if batch and (len(batch) == MAX_BATCH_ENTRIES or batch_bytes + entry.size > MAX_REQUEST_BYTES):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(entry)
        batch_bytes += entry.size
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------- sending


class FatalSendError(Exception):
    """A call-level error that every further batch would hit too (missing bus, denied, bad credentials)."""


def put_batch(
    client: Client,
    entries: Sequence[dict[str, Any]],
    policy: RetryPolicy = DEFAULT_RETRY,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[EntryOutcome], int]:
    """Send one batch (≤10 entries); retry failed entries and throttled calls with backoff.

    Returns one outcome per entry, in order, and the number of PutEvents calls made. Raises
    :class:`FatalSendError` when the call itself fails in a way no retry can fix.
    """
    if len(entries) > MAX_BATCH_ENTRIES:
        raise ValueError(f"a PutEvents batch holds at most {MAX_BATCH_ENTRIES} entries, got {len(entries)}")
    outcomes: list[EntryOutcome | None] = [None] * len(entries)
    pending = list(range(len(entries)))
    calls = 0
    answered = False
    last_error: dict[int, tuple[str, str]] = {}
    for attempt in range(1, policy.max_attempts + 1):
        if attempt > 1:
            sleep(policy.delay(attempt - 1))
        calls += 1
        try:
            response = client.put_events(Entries=[entries[index] for index in pending])
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "ClientError"))
            message = str(error.get("Message", exc))
            if code in FATAL_CALL_ERRORS:
                raise FatalSendError(describe_aws_error(exc) or f"{code}: {message}") from exc
            for index in pending:
                last_error[index] = (code, message)
            if code in RETRYABLE_CALL_ERRORS:
                continue
            break
        except botocore.exceptions.BotoCoreError as exc:
            # Connection refused, timeouts: the entries may or may not have arrived; retry them,
            # EventBridge consumers (our handler) are idempotent per conversation.
            for index in pending:
                last_error[index] = (type(exc).__name__, describe_aws_error(exc) or str(exc))
            if attempt == policy.max_attempts and not answered:
                raise FatalSendError(describe_aws_error(exc) or str(exc)) from exc
            continue
        answered = True
        still: list[int] = []
        for index, result in zip(pending, response.get("Entries", []), strict=False):
            if result.get("EventId"):
                outcomes[index] = EntryOutcome(str(result["EventId"]), attempts=attempt)
                continue
            code = str(result.get("ErrorCode") or "Unknown")
            last_error[index] = (code, str(result.get("ErrorMessage") or ""))
            if code in PERMANENT_ENTRY_ERRORS:
                outcomes[index] = EntryOutcome(None, code, last_error[index][1], attempt)
            else:
                still.append(index)
        count = len(response.get("Entries", []))
        still.extend(pending[count:])  # an answer shorter than the request: retry the rest
        for index in pending[count:]:
            last_error.setdefault(index, ("NoAnswer", "PutEvents returned no result for this entry"))
        pending = still
        if not pending:
            break
    for index in range(len(entries)):
        if outcomes[index] is None:
            code, message = last_error.get(index, ("NotSent", "not sent"))
            outcomes[index] = EntryOutcome(None, code, message, policy.max_attempts)
    return [outcome for outcome in outcomes if outcome is not None], calls


def send(
    client: Client,
    entries: Sequence[PreparedEntry],
    *,
    concurrency: int = 4,
    policy: RetryPolicy = DEFAULT_RETRY,
    progress: Callable[[int], None] | None = None,
) -> EmitReport:
    """Send every entry in batches, ``concurrency`` batches at a time; report what was not accepted."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    all_batches = list(batches(entries))
    report = EmitReport(
        total=len(entries),
        dry_run=False,
        batches=len(all_batches),
        largest_entry_bytes=max((entry.size for entry in entries), default=0),
    )
    lock = threading.Lock()
    fatal: list[str] = []
    started = time.monotonic()

    def run(batch: list[PreparedEntry]) -> None:
        if fatal:
            outcomes = [EntryOutcome(None, "NotSent", f"not sent: {fatal[0]}", 0) for _ in batch]
            calls = 0
        else:
            try:
                outcomes, calls = put_batch(client, [entry.entry for entry in batch], policy)
            except FatalSendError as exc:
                with lock:
                    fatal.append(str(exc))
                outcomes = [EntryOutcome(None, "NotSent", str(exc), 1) for _ in batch]
                calls = 1
        with lock:
            report.api_calls += calls
            for entry, outcome in zip(batch, outcomes, strict=True):
                if outcome.attempts > 1:
                    report.retried_entries += 1
                if outcome.accepted:
                    report.accepted += 1
                else:
                    report.failures.append(
                        EntryFailure(
                            entry.origin,
                            entry.conversation_id,
                            outcome.error_code or "Unknown",
                            outcome.error_message or "",
                            outcome.attempts,
                        )
                    )
        if progress is not None:
            progress(len(batch))

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="emit") as pool:
        for future in [pool.submit(run, batch) for batch in all_batches]:
            future.result()
    position = {entry.origin: index for index, entry in enumerate(entries)}
    report.failures.sort(key=lambda failure: position.get(failure.origin, 0))  # in input order
    report.seconds = time.monotonic() - started
    return report


def dry_run(entries: Sequence[PreparedEntry]) -> EmitReport:
    """What :func:`send` would do, without sending: entry and batch counts, largest entry."""
    return EmitReport(
        total=len(entries),
        dry_run=True,
        batches=sum(1 for _ in batches(entries)),
        largest_entry_bytes=max((entry.size for entry in entries), default=0),
    )
