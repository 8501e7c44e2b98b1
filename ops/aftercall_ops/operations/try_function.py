"""``aftercall try``: run the End function on events with no AWS, no stack and no CRM.

Each event is validated as the EndHandler validates it, ``end_function(conv)`` runs on it, and the
plan is performed by the real code against recordings (:mod:`aftercall.testing`): what is shown is
exactly what the stack would send, with personal data masked. An error in the End function is the
user's own code: it is shown with its traceback, starting in their file.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aftercall.errors import InvalidEventError
from aftercall.ingest.common import Ignored
from aftercall.ingest.errors import IngestError
from aftercall.ingest.normalise import normalise
from aftercall.testing import EndFunction, Plan, RecordingAws, RecordingCrm, run_end_function
from aftercall_ops.operations.emit import RawItem

DEFAULT_FUNCTION = "functions/end_handler/end_function.py:end_function"
PROJECT_ROOT = Path(__file__).resolve().parents[3]

Outcome = Literal["planned", "invalid", "raised", "actions_failed", "skipped"]


class FunctionLoadError(ValueError):
    """``--function`` does not name a loadable function (a usage error, not the function's own)."""


@dataclass
class TryResult:
    """One event's run: what happened, and the plan when there is one."""

    origin: str
    outcome: Outcome
    conversation_id: str | None = None
    error: str | None = None
    traceback: str | None = None
    plan: Plan | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome in ("planned", "skipped")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "origin": self.origin,
            "outcome": self.outcome,
            "ok": self.ok,
            "conversation_id": self.conversation_id,
            "seconds": round(self.seconds, 4),
        }
        if self.error is not None:
            data["error"] = self.error
        if self.traceback is not None:
            data["traceback"] = self.traceback
        if self.plan is not None:
            data["actions"] = self.plan.to_json(masked=True)["actions"]
        return data


@dataclass
class TryReport:
    function: str
    crm: str
    results: list[TryResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "function": self.function,
            "crm": self.crm,
            "events": [result.to_json() for result in self.results],
        }


def load_function(spec: str) -> tuple[EndFunction, Path]:
    """``path.py:name`` → the function; the file's folder goes on ``sys.path`` so its own imports work.

    Raises :class:`FunctionLoadError` for a wrong path or name. An exception raised while the file
    itself runs (a syntax error, a failing import) is the user's code: it propagates.
    """
    file_part, sep, name = spec.rpartition(":")
    if not sep or not file_part or not name:
        raise FunctionLoadError(f"--function {spec!r}: expected path/to/file.py:function_name")
    path = Path(file_part)
    if not path.is_absolute() and not path.exists() and (PROJECT_ROOT / path).exists():
        path = PROJECT_ROOT / path  # the default, when run from outside the project folder
    if not path.is_file():
        raise FunctionLoadError(f"--function {spec!r}: no such file {file_part}")
    path = path.resolve()
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    # A name of its own, so the tried file never replaces a module of the same name already loaded.
    module_name = f"aftercall_try_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise FunctionLoadError(f"--function {spec!r}: {path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    module_spec.loader.exec_module(module)
    function = getattr(module, name, None)
    if not callable(function):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise FunctionLoadError(
            f"--function {spec!r}: {path.name} defines no function {name!r} (it has: {', '.join(defined) or 'none'})"
        )
    return function, path


def user_traceback(exc: BaseException, user_file: Path | None) -> str:
    """The traceback from the first frame in the user's file on (aftercall's own frames above it are noise)."""
    tb: TracebackType | None = exc.__traceback__
    if user_file is not None:
        first = tb
        while first is not None and Path(first.tb_frame.f_code.co_filename).resolve() != user_file:
            first = first.tb_next
        tb = first or tb
    return "".join(traceback.format_exception(type(exc), exc, tb))


def to_details(items: Sequence[RawItem], platform: str | None, environment: str) -> list[tuple[RawItem, Any]]:
    """Each input as the event to try; with ``platform``, mapped from the vendor's payload as ingest maps it.

    A payload that cannot be mapped is paired with its :class:`IngestError`; one that is not a
    call end (ingest ignores it) with its :class:`Ignored` reason.
    """
    if platform is None:
        return [(item, item.value) for item in items]
    mapped: list[tuple[RawItem, Any]] = []
    for item in items:
        try:
            result = normalise(platform, item.value, environment)
        except IngestError as err:
            mapped.append((item, err))
            continue
        mapped.append((item, result if isinstance(result, Ignored) else result.detail))
    return mapped


def try_events(
    items: Sequence[RawItem],
    function: EndFunction,
    *,
    function_name: str,
    user_file: Path | None = None,
    crm: str = "hubspot",
    platform: str | None = None,
    environment: str = "sandbox",
) -> TryReport:
    """Run ``function`` on every item; never raises for an event's or the function's own error."""
    report = TryReport(function_name, crm)
    aws = RecordingAws()  # its clients are built once and shared by every event
    for item, value in to_details(items, platform, environment):
        started = time.perf_counter()
        result = _try_one(item.origin, value, function, user_file, crm, aws)
        result.seconds = time.perf_counter() - started
        report.results.append(result)
    return report


def _try_one(
    origin: str, value: Any, function: EndFunction, user_file: Path | None, crm: str, aws: RecordingAws
) -> TryResult:
    if isinstance(value, IngestError):
        return TryResult(origin, "invalid", error=f"{value.reason}: {value.message}")
    if isinstance(value, Ignored):
        return TryResult(origin, "skipped", error=f"not a call end: {value.reason}")
    conversation_id = _conversation_id(value)
    try:
        plan = run_end_function(value, function, crm=RecordingCrm(crm), aws=aws)
    except InvalidEventError as err:
        return TryResult(origin, "invalid", conversation_id, error=str(err))
    except Exception as exc:  # noqa: BLE001 - the user's function raised: shown with its traceback
        return TryResult(
            origin,
            "raised",
            conversation_id,
            error=f"end_function raised {type(exc).__name__}: {exc}",
            traceback=user_traceback(exc, user_file),
        )
    failed = [f"{a.name}: {type(a.error).__name__}: {a.error}" for a in plan if a.error is not None]
    if failed:
        return TryResult(origin, "actions_failed", plan.conversation_id, error="; ".join(failed), plan=plan)
    return TryResult(origin, "planned", plan.conversation_id, plan=plan)


def _conversation_id(value: Any) -> str | None:
    detail = value.get("detail", value) if isinstance(value, dict) else None
    found = detail.get("conversation_id") if isinstance(detail, dict) else None
    return found if isinstance(found, str) else None
