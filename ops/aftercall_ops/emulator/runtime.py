"""Lambda's execution environments: one process per environment, started by :mod:`worker`, that
imports the handler once and runs invocations one at a time; timeouts kill it, a crash is reported
the way Lambda reports it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aftercall_ops.emulator.account import now_iso

log = logging.getLogger("aftercall_ops.emulator")

#: Lambda allows 10 s for init; a cold Python import on a loaded test machine can take longer.
INIT_TIMEOUT_SECONDS = 60.0

# --- invocation results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InvocationOutcome:
    """One run of the function: its JSON result, or the error document Lambda would report."""

    request_id: str
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None
    timed_out: bool = False
    seconds: float = 0.0

    @property
    def error_summary(self) -> str:
        if self.error is None:
            return ""
        message = str(self.error.get("errorMessage", ""))
        return f"{self.error.get('errorType', 'Error')}: {message[:300]}"


def describe_result(result: Any) -> str:
    """What the handler's report says happened, in a few words for the terminal."""
    if not isinstance(result, dict):
        return "done"
    if result.get("duplicate"):
        return "duplicate, nothing done again"
    if result.get("status") == "rejected":
        return f"rejected ({result.get('error_type')}) and parked in the failed-events queue by the function"
    return str(result.get("status") or "done")


def _platform_error(request_id: str, error_type: str, detail: str) -> dict[str, Any]:
    """An error Lambda itself reports (timeout, crash), worded as Lambda words it."""
    return {"errorMessage": f"RequestId: {request_id} Error: {detail}", "errorType": error_type}


# --- execution environments ----------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """How to start one execution environment."""

    command: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    log_path: Path
    init_timeout: float


class WorkerExited(Exception):
    """The environment's process ended while we waited for it."""


class ExecutionEnvironment:
    """One warm Lambda execution environment: a process that imported app.py once.

    Used by one slot thread at a time; :meth:`kill` may be called from another thread to abort.
    """

    def __init__(self, name: str, launch: Launch, platform_log: PlatformLog) -> None:
        self.name = name
        self._launch = launch
        self._platform_log = platform_log
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        self._shut_down = False
        self.starts = 0

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def invoke(self, payload: Any, request_id: str, function_arn: str, timeout: float) -> InvocationOutcome:
        """Run the handler once; a run past ``timeout`` kills the process (the next run starts a fresh one)."""
        init_error = self._ensure_running(request_id)
        if init_error is not None:
            return InvocationOutcome(request_id, ok=False, error=init_error)
        proc = self._proc
        assert proc is not None
        assert proc.stdin is not None
        started = time.monotonic()
        deadline_ms = int(time.time() * 1000 + timeout * 1000)
        self._platform_log.write("platform.start", {"requestId": request_id, "version": "$LATEST"})
        request = {"request_id": request_id, "event": payload, "deadline_ms": deadline_ms, "function_arn": function_arn}
        try:
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.flush()
            message = self._read(started + timeout)
        except (WorkerExited, BrokenPipeError):
            outcome = InvocationOutcome(
                request_id, ok=False, error=self._exit_error(request_id), seconds=time.monotonic() - started
            )
            self._report(outcome, "error")
            return outcome
        if message is None:
            self.close()
            outcome = InvocationOutcome(
                request_id,
                ok=False,
                error=_platform_error(request_id, "Sandbox.Timedout", f"Task timed out after {timeout:.2f} seconds"),
                timed_out=True,
                seconds=time.monotonic() - started,
            )
            self._report(outcome, "timeout")
            return outcome
        seconds = time.monotonic() - started
        if message.get("ok"):
            outcome = InvocationOutcome(request_id, ok=True, result=message.get("result"), seconds=seconds)
        else:
            outcome = InvocationOutcome(request_id, ok=False, error=dict(message.get("error") or {}), seconds=seconds)
        self._report(outcome, "success" if outcome.ok else "error")
        return outcome

    def _report(self, outcome: InvocationOutcome, status: str) -> None:
        record: dict[str, Any] = {
            "requestId": outcome.request_id,
            "status": status,
            "metrics": {"durationMs": round(outcome.seconds * 1000, 2)},
        }
        if outcome.error is not None:
            record["errorType"] = outcome.error.get("errorType")
            if status != "error":  # timeouts and crashes: Lambda's own message, not the function's
                record["errorMessage"] = outcome.error.get("errorMessage")
        self._platform_log.write("platform.report", record)

    def _ensure_running(self, request_id: str) -> dict[str, Any] | None:
        """Start the process if there is none (a cold start); returns Lambda's init error, if any."""
        if self._proc is not None and self._proc.poll() is None:
            return None
        self.close()
        launch = self._launch
        started = time.monotonic()
        with self._lock, launch.log_path.open("ab") as log_file:
            if self._shut_down:  # the stack is stopping: start nothing new
                return _platform_error(request_id, "Runtime.ExitError", "the local stack is stopping")
            self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
                launch.command,
                cwd=launch.cwd,
                env=dict(launch.env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                bufsize=0,
                start_new_session=True,  # Ctrl-C in a terminal reaches the parent, which stops us in order
            )
        self.starts += 1
        try:
            message = self._read(started + launch.init_timeout)
        except WorkerExited:
            return self._exit_error(request_id)
        init_ms = round((time.monotonic() - started) * 1000, 1)
        if message is None:
            self.close()
            self._platform_log.write(
                "platform.initReport", {"phase": "init", "status": "timeout", "metrics": {"durationMs": init_ms}}
            )
            return _platform_error(
                request_id, "Runtime.InitTimeout", f"Init phase timed out after {launch.init_timeout:.0f} seconds"
            )
        if message.get("type") != "ready":
            self.close()
            self._platform_log.write(
                "platform.initReport", {"phase": "init", "status": "error", "metrics": {"durationMs": init_ms}}
            )
            return {**dict(message.get("error") or {}), "requestId": request_id}
        self._platform_log.write(
            "platform.initReport",
            {
                "initializationType": "on-demand",
                "phase": "init",
                "status": "success",
                "metrics": {"durationMs": init_ms},
            },
        )
        return None

    def _exit_error(self, request_id: str) -> dict[str, Any]:
        proc = self._proc
        code = None
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.wait(timeout=5)
        self.close()
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name.removeprefix("SIG").lower()
            except ValueError:
                name = str(-code)
            detail = f"Runtime exited with error: signal: {name}"
        else:
            detail = f"Runtime exited with error: exit status {code}"
        return _platform_error(request_id, "Runtime.ExitError", detail)

    def _read(self, deadline: float) -> dict[str, Any] | None:
        """The next message from the process, or None when ``deadline`` (monotonic) passes first."""
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise WorkerExited(self.name)
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self.kill_process()
            raise WorkerExited(f"{self.name} answered something that is not a runtime message")
        return message

    def kill_process(self) -> None:
        """End the current process only (a fresh one starts on the next invocation)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    def kill(self) -> None:
        """Abort whatever runs now and start nothing after it (thread-safe: only sends SIGKILL)."""
        with self._lock:
            self._shut_down = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    def close(self) -> None:
        """Kill the process (if any) and release its pipes."""
        proc, self._proc = self._proc, None
        self._buffer = b""
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


class PlatformLog:
    """Lambda's platform lines (start, report, init) in the same JSON log file as the function's."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._handle: IO[str] | None = path.open("a", encoding="utf-8")

    def write(self, kind: str, record: Mapping[str, Any]) -> None:
        line = json.dumps({"time": now_iso(), "type": kind, "record": dict(record)}, default=str)
        with self._lock:
            if self._handle is not None:
                self._handle.write(line + "\n")
                self._handle.flush()

    def close(self) -> None:
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()
