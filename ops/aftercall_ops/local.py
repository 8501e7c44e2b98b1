"""The local stack: the whole aftercall pipeline on loopback, with no AWS account and no Docker.

Why it exists: the handler, the CLI and the tests must run against the same shapes as in AWS
(EventBridge envelope, Lambda's async retries, the ``OnFailure`` record, stack outputs) without
an account. Everything is taken from ``template.yaml`` through :func:`stack_spec`, so local and
cloud cannot drift apart:

* moto in server mode on 127.0.0.1 holds the template's resources that have a local use (bus,
  queues, table, secrets, topics, schedule group), the rule with the template's pattern, and a
  CloudFormation stack whose outputs are the template's Outputs resolved to the local values, so
  ``--stack NAME`` resolves as in AWS;
* moto cannot run Lambda, so the rule targets an SQS "delivery" queue (with an input transformer
  that delivers the whole event, ``account`` included), and a dispatcher gives the real
  ``functions/end_handler/app.py`` Lambda's async semantics: one process per unit of reserved
  concurrency, retries with delays, timeouts that kill the process, then an ``OnFailure`` record
  in the failed-events queue in the exact AWS shape;
* a fake HubSpot (:class:`FakeCrm`) seeded with :data:`aftercall_ops.generate.CUSTOMERS`;
* a Lambda ``Invoke`` endpoint for ``aftercall replay --mode invoke`` (boto3 honours
  ``AWS_ENDPOINT_URL_LAMBDA``) that runs any of the template's functions, and each function URL
  (``FunctionUrlConfig``) served on a loopback port of its own.

Not emulated: rules of other functions (EventBridge Scheduler never fires in moto, the Connect
rule has no source locally); invoke those functions directly instead.

``python -m aftercall_ops.local`` (or :func:`serve`) runs it in a terminal until Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import heapq
import itertools
import json
import logging
import math
import os
import re
import secrets as secrets_module
import select
import shlex
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from aftercall.crm.http import check_outbound_url
from aftercall.errors import ConfigurationError
from aftercall_ops.fakes.hubspot import FakeCrm
from aftercall_ops.generate import CUSTOMERS
from aftercall_ops.template import PROJECT_ROOT, Resolver, StackSpec, function_properties, load_template, stack_spec

log = logging.getLogger(__name__)

REGION = "us-east-1"
#: moto's default account; the template resolver uses the same one for ARNs.
ACCOUNT_ID = "123456789012"
LOCAL_ACCESS_KEY = "testing"
LOCAL_SECRET_KEY = "testing"  # noqa: S105 - moto accepts any credentials; these reach nothing real
DEFAULT_STACK_NAME = "aftercall-local"
DEFAULT_PARAMETERS: Mapping[str, str] = {"Stage": "sandbox"}
#: Real Lambda waits about 1 then 2 minutes between async retries; locally that would only slow us down.
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0.2, 0.4)
#: Lambda allows 10 s for init; a cold Python import on a loaded test machine can take longer.
INIT_TIMEOUT_SECONDS = 60.0
#: Held delivery messages are kept invisible in slices this long, renewed while they are worked on.
DELIVERY_VISIBILITY_SECONDS = 30
RECEIVE_WAIT_SECONDS = 1
SYNC_PAYLOAD_LIMIT = 6 * 1024 * 1024
ASYNC_PAYLOAD_LIMIT = 256 * 1024
DELIVERY_TARGET_ID = "EndHandlerDelivery"
#: Logical ids the local stack treats specially: the function the rule feeds, the secret with the CRM token.
END_HANDLER = "EndHandler"
CRM_SECRET = "CrmSecret"  # noqa: S105 - a logical id in template.yaml, not a secret

#: Names a moto server in this process already uses: moto's state is per process, not per server.
_CLAIMS: dict[str, str] = {}
_CLAIMS_LOCK = threading.Lock()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"


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


def _describe(result: Any) -> str:
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
class _Launch:
    """How to start one execution environment."""

    command: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    log_path: Path
    init_timeout: float


class _WorkerExited(Exception):
    """The environment's process ended while we waited for it."""


class _ExecutionEnvironment:
    """One warm Lambda execution environment: a process that imported app.py once.

    Used by one slot thread at a time; :meth:`kill` may be called from another thread to abort.
    """

    def __init__(self, name: str, launch: _Launch, platform_log: _PlatformLog) -> None:
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
        except (_WorkerExited, BrokenPipeError):
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
        except _WorkerExited:
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
                raise _WorkerExited(self.name)
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self.kill_process()
            raise _WorkerExited(f"{self.name} answered something that is not a runtime message")
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


class _PlatformLog:
    """Lambda's platform lines (start, report, init) in the same JSON log file as the function's."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._handle: IO[str] | None = path.open("a", encoding="utf-8")

    def write(self, kind: str, record: Mapping[str, Any]) -> None:
        line = json.dumps({"time": _now_iso(), "type": kind, "record": dict(record)}, default=str)
        with self._lock:
            if self._handle is not None:
                self._handle.write(line + "\n")
                self._handle.flush()

    def close(self) -> None:
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()


# --- jobs -----------------------------------------------------------------------------------------


@dataclass
class _AsyncEvent:
    """One event from the delivery queue, through all of its attempts (Lambda's async invocation)."""

    payload: Any
    message_id: str
    receipt_handle: str
    sent_ms: int
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    attempts: int = 0
    last_failure: InvocationOutcome | None = None
    invisible_until: float = 0.0
    #: A retry also waits for the invocations that were running when its attempt failed (see _FunctionPool).
    after_invocation: int = -1

    @property
    def label(self) -> str:
        detail = self.payload.get("detail") if isinstance(self.payload, dict) else None
        conversation = detail.get("conversation_id") if isinstance(detail, dict) else None
        return f"conversation {conversation}" if conversation else f"request {self.request_id}"


@dataclass
class _SyncRequest:
    """A RequestResponse invocation; its caller waits on ``future``."""

    payload: Any
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    future: Future[InvocationOutcome] = field(default_factory=Future)


_Job = _AsyncEvent | _SyncRequest


# --- resources from the template -------------------------------------------------------------------

#: Resource types the local stack creates in moto or names locally. Others (alarms, KMS keys, log
#: groups, the layer, policies, subscriptions, the dashboard) have no local use and are skipped;
#: a reference to one from the functions' environment or the outputs is an error that names it.
FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
FUNCTION_URL_TYPE = "AWS::Lambda::Url"
_NAME_PROPERTIES = {
    "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::SecretsManager::Secret": "Name",
    "AWS::Events::EventBus": "Name",
    "AWS::Scheduler::ScheduleGroup": "Name",
    "AWS::IAM::Role": "RoleName",
    **dict.fromkeys(FUNCTION_TYPES, "FunctionName"),
    FUNCTION_URL_TYPE: "FunctionName",
}
_QUEUE_ATTRIBUTES = ("MessageRetentionPeriod", "VisibilityTimeout", "DelaySeconds", "MaximumMessageSize")
_SUB_REFERENCE = re.compile(r"\$\{([A-Za-z0-9]+)(?:\.([A-Za-z0-9.]+))?\}")


class _LocalResources:
    """Physical names and attributes of the template's resources as created locally (Ref and GetAtt)."""

    def __init__(self, stack_name: str) -> None:
        self.stack_name = stack_name
        self.refs: dict[str, str] = {}
        self.attributes: dict[str, dict[str, str]] = {}

    def add(self, logical_id: str, ref: str, **attributes: str) -> None:
        self.refs[logical_id] = ref
        self.attributes[logical_id] = attributes

    def value(self, resolved: Any, where: str) -> str:
        """A value the template resolver left with resource references, with the local names filled in."""
        if isinstance(resolved, bool):
            return "true" if resolved else "false"
        if isinstance(resolved, str | int | float):
            return self._substitute(str(resolved), where)
        if isinstance(resolved, dict) and len(resolved) == 1:
            ((key, arg),) = resolved.items()
            if key == "Ref" and isinstance(arg, str):
                return self._lookup(arg, None, where)
            if key == "Fn::GetAtt" and isinstance(arg, list) and len(arg) == 2:
                return self._lookup(str(arg[0]), str(arg[1]), where)
        raise RuntimeError(f"{where}: the local stack cannot resolve {resolved!r} (did template.yaml change?)")

    def _substitute(self, text: str, where: str) -> str:
        return _SUB_REFERENCE.sub(lambda match: self._lookup(match[1], match[2], where), text)

    def _lookup(self, logical_id: str, attribute: str | None, where: str) -> str:
        if logical_id not in self.refs:
            raise RuntimeError(
                f"{where} refers to {logical_id}, which the local stack does not create "
                "(did template.yaml change? teach aftercall_ops.local about it)"
            )
        if attribute is None:
            return self.refs[logical_id]
        if attribute not in self.attributes[logical_id]:
            raise RuntimeError(f"{where} wants {logical_id}.{attribute}, which the local stack does not know")
        return self.attributes[logical_id][attribute]


@dataclass(frozen=True)
class _PlannedResource:
    """A template resource the local stack makes, with its physical name."""

    logical_id: str
    kind: str
    name: str
    properties: dict[str, Any]


@dataclass(frozen=True)
class _FunctionConfig:
    """One Lambda function of the template, as the local stack runs it."""

    logical_id: str
    name: str
    arn: str
    handler: str
    code_dir: Path
    timeout: float
    memory_mb: int
    log_level: str
    log_group_name: str
    environment: dict[str, str]
    concurrency: int
    log_path: Path
    end_function: Path | None = None


# --- one function's execution environments and the jobs waiting for them ----------------------------


class _FunctionPool:
    """A function's environments (one process each, one per unit of concurrency) and its job queue.

    Jobs wait in a heap by the time they may start (a retry waits out its delay there without
    holding an environment); a slot thread per environment takes the next due job.
    """

    def __init__(
        self,
        config: _FunctionConfig,
        launch_env: Mapping[str, str],
        stopping: threading.Event,
        run: Callable[[_FunctionPool, _Job, _ExecutionEnvironment], None],
        recover: Callable[[_Job, Exception], None],
    ) -> None:
        self.config = config
        self.platform_log = _PlatformLog(config.log_path)
        self._stopping = stopping
        self._run = run
        self._recover = recover
        self.cond = threading.Condition()
        self.heap: list[tuple[float, int, _Job]] = []
        self._seq = itertools.count()
        self.in_flight = 0
        self._running: set[int] = set()
        self._invocation_ids = itertools.count()
        self.counts = dict.fromkeys(
            ("invocations", "succeeded", "failed_attempts", "timeouts", "sent_to_dlq", "dlq_write_failures"), 0
        )
        command = [sys.executable, "-m", "aftercall_ops.local_worker", "--handler", config.handler]
        if config.end_function is not None:
            command += ["--end-function", str(config.end_function)]
        self.environments = [
            _ExecutionEnvironment(
                f"{config.name}-{index}",
                _Launch(
                    command=tuple(command),
                    env={
                        **launch_env,
                        "AWS_LAMBDA_LOG_STREAM_NAME": f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]local{index:02d}",
                    },
                    cwd=config.code_dir,
                    log_path=config.log_path,
                    init_timeout=INIT_TIMEOUT_SECONDS,
                ),
                self.platform_log,
            )
            for index in range(config.concurrency)
        ]
        self.threads = [
            threading.Thread(target=self._slot_loop, args=(environment,), name=environment.name, daemon=True)
            for environment in self.environments
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def push(self, not_before: float, job: _Job) -> None:
        with self.cond:
            heapq.heappush(self.heap, (not_before, next(self._seq), job))
            self.cond.notify_all()

    def count(self, name: str) -> None:
        with self.cond:
            self.counts[name] += 1

    def due_backlog(self) -> int:
        with self.cond:
            now = time.monotonic()
            return sum(1 for due, _, _ in self.heap if due <= now)

    def abort(self) -> None:
        """Stop taking jobs and kill what runs (the stack is stopping)."""
        with self.cond:
            self.cond.notify_all()
        for environment in self.environments:
            environment.kill()

    def join(self) -> list[_Job]:
        """Wait for the slot threads, close the environments; returns the jobs that never ran."""
        for thread in self.threads:
            if thread.ident is not None:
                thread.join(timeout=15)
                if thread.is_alive():
                    log.warning("thread %s did not stop within 15 s", thread.name)
        for environment in self.environments:
            environment.close()
        self.platform_log.close()
        with self.cond:
            left = [job for _, _, job in self.heap]
            self.heap.clear()
        return left

    def _slot_loop(self, environment: _ExecutionEnvironment) -> None:
        """One unit of concurrency: takes due jobs one at a time and runs them in its environment."""
        while True:
            with self.cond:
                job: _Job | None = None
                while not self._stopping.is_set():
                    job = self._take_due(time.monotonic())
                    if job is not None:
                        self.in_flight += 1
                        break
                    wake = min((due for due, _, _ in self.heap), default=math.inf) - time.monotonic()
                    self.cond.wait(min(0.5, max(wake, 0.01)))
                if job is None:
                    return
            try:
                self._run(self, job, environment)
            except Exception as exc:
                # A bug of ours must not kill this slot or strand the job: report it, hand the job back.
                log.exception("the local dispatcher failed while running a job; the environment is reset")
                environment.close()
                self._recover(job, exc)
            finally:
                with self.cond:
                    self.in_flight -= 1
                    self.cond.notify_all()

    def _take_due(self, now: float) -> _Job | None:
        """The next job whose time has come (call with ``cond`` held).

        Real Lambda retries after about 1 and 2 minutes, by which time the invocations that were
        running when the attempt failed have long finished (a duplicate of a conversation in
        progress then finds it done). Locally the delays are a fraction of a second, so a retry
        also waits for those invocations to end; otherwise duplicates racing each other would end
        in the failed-events queue here and not in AWS.
        """
        oldest_running = min(self._running, default=math.inf)
        for entry in sorted(self.heap):
            due, _, job = entry
            if due > now:
                return None
            if isinstance(job, _AsyncEvent) and job.after_invocation >= oldest_running:
                continue
            self.heap.remove(entry)
            heapq.heapify(self.heap)
            return job
        return None

    def newest_running(self) -> int:
        """The newest invocation running now (-1 for none): a retry scheduled now waits for it."""
        with self.cond:
            return max(self._running, default=-1)

    def execute(self, environment: _ExecutionEnvironment, payload: Any, request_id: str) -> InvocationOutcome | None:
        """One attempt; None when the stack is stopping (the attempt was aborted, not failed)."""
        self.count("invocations")
        with self.cond:
            token = next(self._invocation_ids)
            self._running.add(token)
        try:
            outcome = environment.invoke(payload, request_id, self.config.arn, self.config.timeout)
        finally:
            with self.cond:
                self._running.discard(token)
                self.cond.notify_all()
        if self._stopping.is_set() and not outcome.ok:
            return None
        if outcome.ok:
            self.count("succeeded")
        else:
            self.count("failed_attempts")
            if outcome.timed_out:
                self.count("timeouts")
        return outcome


# --- the Lambda Invoke endpoint -------------------------------------------------------------------

_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")


class _InvokeServer(ThreadingHTTPServer):
    daemon_threads = True
    stack: LocalStack
    function: str  # the function a function URL server serves ("" for the Invoke API)


class _InvokeHandler(BaseHTTPRequestHandler):
    """``POST /2015-03-31/functions/{name}/invocations``, answered as Lambda answers it."""

    protocol_version = "HTTP/1.1"
    timeout = 60.0  # a client that stops sending mid-request frees its thread (boto3 sends at once)
    server: _InvokeServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("invoke endpoint: " + format, *args)

    def do_GET(self) -> None:
        self._drain()
        self._error(501, "NotImplementedException", "the local Lambda endpoint implements only Invoke")

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        match = _INVOKE_PATH.match(parts.path)
        body = self._drain()
        if body is None:
            length = _content_length(self)
            if length is not None and length > SYNC_PAYLOAD_LIMIT:
                self._error(
                    413,
                    "RequestTooLargeException",
                    "Request must be smaller than 6291456 bytes for the InvokeFunction operation",
                )
            else:
                self._error(400, "InvalidRequestContentException", "the Content-Length does not match the body")
            return
        if match is None:
            self._error(501, "NotImplementedException", "the local Lambda endpoint implements only Invoke")
            return
        stack = self.server.stack
        qualifier = parse_qs(parts.query).get("Qualifier", [None])[0]
        name = unquote(match["name"])
        function = stack.function_named(name, qualifier)
        if function is None:
            self._error(404, "ResourceNotFoundException", f"Function not found: {stack.function_arn_for(name)}")
            return
        invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            self._error(400, "InvalidRequestContentException", f"Could not parse request body into json: {exc}")
            return
        if invocation_type == "DryRun":
            self._send(204, b"", {})
        elif invocation_type == "Event":
            if len(body) > ASYNC_PAYLOAD_LIMIT:
                self._error(
                    413,
                    "RequestTooLargeException",
                    "Request must be smaller than 262144 bytes for the InvokeAsync operation",
                )
                return
            if function != stack.function_name:
                self._error(
                    400,
                    "InvalidParameterValueException",
                    "the local stack runs Event invocations only for the EndHandler",
                )
                return
            request_id = stack.invoke_async(payload)
            self._send(202, b"", {"x-amzn-RequestId": request_id})
        elif invocation_type == "RequestResponse":
            self._invoke_sync(stack, payload, function)
        else:
            self._error(400, "InvalidParameterValueException", f"Unsupported invocation type {invocation_type!r}")

    def _invoke_sync(self, stack: LocalStack, payload: Any, function: str) -> None:
        try:
            outcome = stack.invoke(payload, function=function)
        except (TimeoutError, RuntimeError) as exc:
            self._error(503, "ServiceException", f"local stack could not run the function: {exc}")
            return
        headers = {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": outcome.request_id}
        if outcome.ok:
            self._send(200, json.dumps(outcome.result).encode(), headers)
        else:
            headers["X-Amz-Function-Error"] = "Unhandled"
            self._send(200, json.dumps(outcome.error).encode(), headers)

    def _drain(self) -> bytes | None:
        """The request body (None when it is over the size limit, its length is not a number, or it
        ends early; the connection is then closed)."""
        length = _content_length(self)
        if length is None or length > SYNC_PAYLOAD_LIMIT:
            self.close_connection = True
            return None
        return _read_body(self, length)

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"Type": "User", "Message": message, "message": message}).encode()
        self._send(status, body, {"x-amzn-ErrorType": code})

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(body)


#: How long a loopback server waits on a client that stops sending mid-request.
_CLIENT_TIMEOUT_SECONDS = 5.0
_DIGITS_ONLY = re.compile(r"[0-9]{1,12}")


def _content_length(handler: BaseHTTPRequestHandler) -> int | None:
    """The request's Content-Length (0 when absent), or None when it is not a plain decimal number
    (``abc``, ``-1``, ``+5``, two different values): the connection is then closed, because where
    this request's body ends, and so where the next request starts, is unknown (RFC 9110, 8.6)."""
    values = {value.strip() for value in handler.headers.get_all("Content-Length") or []}
    if not values:
        return 0
    if len(values) == 1 and _DIGITS_ONLY.fullmatch(next(iter(values))):
        return int(next(iter(values)))
    handler.close_connection = True
    return None


def _read_body(handler: BaseHTTPRequestHandler, length: int) -> bytes | None:
    """``length`` bytes of body, or None when the client sends fewer and stops (the connection is closed)."""
    if not length:
        return b""
    try:
        body = handler.rfile.read(length)
    except (TimeoutError, OSError):
        body = b""
    if len(body) < length:
        handler.close_connection = True
        return None
    return body


class _FunctionUrlHandler(BaseHTTPRequestHandler):
    """A Lambda function URL: any request becomes a payload-2.0 event, the result becomes the answer."""

    protocol_version = "HTTP/1.1"
    timeout = _CLIENT_TIMEOUT_SECONDS  # a client that stops sending mid-request frees its thread
    server: _InvokeServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("function URL: " + format, *args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = _content_length(self)
        if length is None:
            self._answer(400, {"content-type": "application/json"}, b'{"Message":"Bad Request"}')
            return
        if length > SYNC_PAYLOAD_LIMIT:
            self.close_connection = True
            self._answer(413, {"content-type": "application/json"}, b'{"Message":"Request Entity Too Large"}')
            return
        body = _read_body(self, length)
        if body is None:
            self._answer(400, {"content-type": "application/json"}, b'{"Message":"Bad Request"}')
            return
        try:
            outcome = self.server.stack.invoke(self._event(body), function=self.server.function)
        except (TimeoutError, RuntimeError):
            self._answer(503, {"content-type": "application/json"}, b'{"Message":"Service Unavailable"}')
            return
        if not outcome.ok:
            self._answer(502, {"content-type": "application/json"}, b'{"Message":"Internal Server Error"}')
            return
        self._answer(*_function_url_response(outcome.result))

    def _event(self, body: bytes) -> dict[str, Any]:
        """The event Lambda builds for a function URL request (payload format 2.0)."""
        parts = urlsplit(self.path)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        content_type = headers.get("content-type", "")
        textual = content_type.startswith("text/") or any(
            kind in content_type for kind in ("json", "xml", "x-www-form-urlencoded", "javascript")
        )
        try:
            text = body.decode("utf-8") if textual else None
        except UnicodeDecodeError:
            text = None
        now = datetime.now(UTC)
        url_id = f"local{self.server.server_address[1]}"
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": parts.path or "/",
            "rawQueryString": parts.query,
            "headers": headers,
            "requestContext": {
                "accountId": "anonymous",
                "apiId": url_id,
                "domainName": f"{url_id}.lambda-url.{REGION}.on.aws",
                "domainPrefix": url_id,
                "http": {
                    "method": self.command,
                    "path": parts.path or "/",
                    "protocol": self.request_version,
                    "sourceIp": self.client_address[0],
                    "userAgent": headers.get("user-agent", ""),
                },
                "requestId": str(uuid.uuid4()),
                "routeKey": "$default",
                "stage": "$default",
                "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "timeEpoch": int(now.timestamp() * 1000),
            },
            "isBase64Encoded": text is None and bool(body),
        }
        if parts.query:
            event["queryStringParameters"] = {key: ",".join(values) for key, values in parse_qs(parts.query).items()}
        if body:
            event["body"] = text if text is not None else base64.b64encode(body).decode()
        return event

    def _answer(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


def _function_url_response(result: Any) -> tuple[int, dict[str, str], bytes]:
    """Lambda's translation of a handler result into the function URL's HTTP answer."""
    if not isinstance(result, dict) or "statusCode" not in result:
        return 200, {"content-type": "application/json"}, json.dumps(result).encode()
    body = result.get("body") or ""
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    headers = {str(key): str(value) for key, value in (result.get("headers") or {}).items()}
    headers.setdefault("content-type", "application/json")
    return int(result["statusCode"]), headers, raw


# --- the stack --------------------------------------------------------------------------------------


class LocalStack:
    """The aftercall stack on loopback: moto, the fake CRM, the dispatcher and the Invoke endpoint.

    Use as a context manager (or ``start()``/``stop()``). ``env`` is what a client process needs
    to talk to it, ``outputs`` are the stack outputs as ``describe_stacks`` returns them.
    ``workers``, ``function_timeout``, ``end_function`` and ``end_handler_environment`` (extra
    variables, e.g. ``CRM_READ_TIMEOUT_SECONDS`` for runs that need short CRM timeouts) apply to the
    EndHandler; every other function of the template can be invoked synchronously through the
    Invoke endpoint. ``crm_seed`` seeds the fake CRM's probabilistic faults.
    """

    def __init__(
        self,
        stack_name: str = DEFAULT_STACK_NAME,
        parameters: dict[str, str] | None = None,
        *,
        workers: int | None = None,
        function_timeout: float | None = None,
        retry_delays: tuple[float, ...] | None = None,
        end_function: str | None = None,
        state_dir: Path | None = None,
        moto_port: int = 0,
        max_event_age: float | None = None,
        end_handler_environment: Mapping[str, str] | None = None,
        crm_seed: int = 0,
        crm_url: str | None = None,
        crm_secret: Mapping[str, str] | None = None,
    ) -> None:
        self.stack_name = stack_name
        self.parameters = {**DEFAULT_PARAMETERS, **(parameters or {})}
        for name in ("CrmSecretArn", "CrmBaseUrl"):
            if self.parameters.get(name):
                raise ValueError(
                    f"parameter {name} points at a real CRM; the local stack uses its fake CRM and a secret of "
                    "its own, or the CRM you name with crm_url (aftercall local --crm-url), so leave it empty"
                )
        #: Another CRM endpoint instead of the fake (a CRM sandbox, a fake of your own), and its secret.
        self.external_crm_url = _external_crm_url(crm_url) if crm_url else None
        self.external_crm_secret = dict(crm_secret or {})
        self._template = load_template()
        self.spec: StackSpec = stack_spec(stack_name, self.parameters, self._template)
        self._resolver = Resolver(self._template, self.parameters, stack_name)
        #: Every template parameter with the value this stack uses (defaults filled in).
        self.template_parameters: dict[str, str] = dict(self._resolver.parameters)
        self.workers = self.spec.reserved_concurrency if workers is None else workers
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        self.function_timeout = float(
            self.spec.function_timeout_seconds if function_timeout is None else function_timeout
        )
        if self.function_timeout <= 0:
            raise ValueError("function_timeout must be positive")
        self._timeout_overridden = function_timeout is not None
        self.retry_delays = DEFAULT_RETRY_DELAYS if retry_delays is None else tuple(retry_delays)
        if any(delay < 0 for delay in self.retry_delays):
            raise ValueError("retry delays must not be negative")
        self.max_retries = self.spec.function_max_retry_attempts
        self.max_event_age = float(self.spec.function_max_event_age_seconds if max_event_age is None else max_event_age)
        end_handler = self._template["Resources"][END_HANDLER]["Properties"]
        default_end_function = PROJECT_ROOT / str(end_handler["CodeUri"]) / "end_function.py"
        self.end_function = Path(end_function or default_end_function).resolve()
        if not self.end_function.is_file():
            raise FileNotFoundError(f"end_function module not found: {self.end_function}")
        self.moto_port = moto_port
        self._planned = self._plan_resources()
        self.function_name = next(p.name for p in self._planned if p.logical_id == END_HANDLER)
        self.function_arn = _function_arn(self.function_name)
        self.delivery_queue_name = f"{stack_name}-delivery"
        self._requested_state_dir = state_dir

        self.state_dir = Path()
        self.log_path = Path()
        self.env: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        self.end_handler_environment = dict(end_handler_environment or {})
        self.crm = FakeCrm(seed=crm_seed)
        self.moto_url = ""
        self.invoke_url = ""
        self.delivery_queue_url = ""
        self.failed_events_queue_url = ""
        self.function_environment: dict[str, str] = {}

        self._started = False
        self._stopping = threading.Event()
        self._claims: list[str] = []
        self._moto: Any = None
        self._clients: dict[str, Any] = {}
        self._teardown: list[tuple[str, str]] = []
        self._resources = _LocalResources(stack_name)
        self._pools: dict[str, _FunctionPool] = {}
        #: Each function's JSON log file (``log_path`` is the EndHandler's).
        self.log_paths: dict[str, Path] = {}
        self._poller: threading.Thread | None = None
        self._http_servers: list[tuple[_InvokeServer, threading.Thread]] = []
        #: Function URLs, by function name (the IngestFunction's, for vendor webhooks).
        self.function_urls: dict[str, str] = {}
        self._held_lock = threading.Lock()
        #: Held by the poller from a receive until its messages are held, so :meth:`in_flight` sees
        #: every message either in the delivery queue or held, never between the two.
        self._intake_lock = threading.Lock()
        self._returning: dict[str, tuple[Any, float]] = {}  # message id -> (payload, visible again at)
        self._held: dict[str, _AsyncEvent] = {}  # message id -> event being worked on

    # --- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _start_fake_crm(self) -> None:
        """The fake HubSpot, with the generator's customers as people typed their numbers."""
        self.crm.start()
        for customer in CUSTOMERS:
            first, _, last = customer.name.partition(" ")
            self.crm.add_contact(
                phone=customer.typed_phone,  # as people typed them: HubSpot keeps the format
                email=customer.email,
                properties={"firstname": first, "lastname": last},
            )

    @property
    def crm_url(self) -> str:
        """Where the End function sends its CRM requests: the fake CRM, or ``crm_url``."""
        return self.external_crm_url or self.crm.url

    def start(self) -> LocalStack:
        """Start moto, the fake CRM, create the resources, then the dispatcher; returns ``self``."""
        if self._started:
            return self
        self._started = True
        self._stopping.clear()
        try:
            self._claim_names()
            self._prepare_state_dir()
            self._start_moto()
            if self.external_crm_url is None:
                self._start_fake_crm()
            self._create_resources()
            self._create_rule()
            self._start_functions()
            self.outputs = self._create_cloudformation_stack()
            self._start_invoke_server()
            self.env = self._client_env()
            self._start_poller()
        except BaseException:
            self.stop()
            raise
        log.info("local stack %s is up: moto %s, CRM %s", self.stack_name, self.moto_url, self.crm_url)
        return self

    def stop(self) -> None:
        """Stop everything this stack started, in order; safe to call more than once."""
        if not self._started:
            return
        self._stopping.set()
        for server, thread in self._http_servers:  # no new requests from here on
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        self._http_servers.clear()
        for pool in self._pools.values():
            pool.abort()
        if self._poller is not None:
            self._poller.join(timeout=15)
            self._poller = None
        for pool in self._pools.values():
            for job in pool.join():
                if isinstance(job, _SyncRequest) and not job.future.done():
                    job.future.set_exception(RuntimeError("the local stack stopped"))
        self._pools.clear()
        with self._held_lock:
            self._held.clear()
            self._returning.clear()
        self._delete_resources()
        self.crm.stop()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        self._release_names()
        self._started = False

    def _claim_names(self) -> None:
        """moto keeps one state per process: refuse a second live stack that would share names."""
        names = [f"stack {self.stack_name}", *(f"{p.kind} {p.name}" for p in self._planned)]
        with _CLAIMS_LOCK:
            taken = [name for name in names if name in _CLAIMS]
            if taken:
                raise RuntimeError(
                    f"another local stack in this process ({_CLAIMS[taken[0]]}) already uses {', '.join(taken)}; "
                    "moto's state is per process, so stop it first or use another stack name or Stage"
                )
            for name in names:
                _CLAIMS[name] = self.stack_name
        self._claims = names

    def _release_names(self) -> None:
        with _CLAIMS_LOCK:
            for name in self._claims:
                _CLAIMS.pop(name, None)
        self._claims = []

    def _prepare_state_dir(self) -> None:
        if self._requested_state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix=f"aftercall-local-{self.stack_name}-"))
        else:
            self.state_dir = self._requested_state_dir
            self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self._log_path(END_HANDLER)
        self.log_path.touch()

    def _log_path(self, logical_id: str) -> Path:
        name = "end-handler" if logical_id == END_HANDLER else re.sub(r"(?<!^)(?=[A-Z])", "-", logical_id).lower()
        return self.state_dir / f"{name}.log"

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        from aftercall_ops import moto_fixes

        moto_fixes.apply()  # SQS deletes that lose messages, aws.* sources PutEvents must refuse; see moto_fixes.py
        # werkzeug logs every request moto serves to stderr; only its errors are worth seeing.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.moto_port, verbose=False)
        server.start()
        self._moto = server
        host, port = server.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        session = boto3.session.Session(
            aws_access_key_id=LOCAL_ACCESS_KEY, aws_secret_access_key=LOCAL_SECRET_KEY, region_name=REGION
        )
        config = Config(
            connect_timeout=5,
            read_timeout=RECEIVE_WAIT_SECONDS + 20,
            retries={"total_max_attempts": 2, "mode": "standard"},
            max_pool_connections=max(10, self.workers + 4),
        )
        for service in ("events", "sqs", "sns", "dynamodb", "secretsmanager", "scheduler", "cloudformation"):
            self._clients[service] = session.client(service, endpoint_url=self.moto_url, config=config)

    # --- resources -------------------------------------------------------------------------------

    def _plan_resources(self) -> list[_PlannedResource]:
        """The template's resources the local stack makes, with their physical names (as CloudFormation
        would name them, minus the random suffix), honouring the template's conditions."""
        planned = []
        for logical_id, resource in self._template["Resources"].items():
            condition = resource.get("Condition")
            if condition is not None and not self._resolver.conditions[condition]:
                continue
            kind = str(resource["Type"])
            name_property = _NAME_PROPERTIES.get(kind)
            if name_property is None:
                continue  # no local use (alarms, keys, log groups, policies, ...)
            properties = resource.get("Properties", {})
            if name_property in properties:
                name = str(self._resolver.value(properties[name_property]))
            else:
                name = f"{self.stack_name}-{logical_id}"
            planned.append(_PlannedResource(logical_id, kind, name, properties))
            if kind in FUNCTION_TYPES and "FunctionUrlConfig" in properties:
                # SAM's FunctionUrlConfig makes `<Function>Url` (AWS::Lambda::Url); served on its own port.
                planned.append(_PlannedResource(f"{logical_id}Url", FUNCTION_URL_TYPE, name, properties))
        buses = {p.name for p in planned if p.kind == "AWS::Events::EventBus"}
        if self.spec.bus_name != "default" and self.spec.bus_name not in buses:
            # ExistingEventBusName: in AWS it exists already; locally it has to be made all the same.
            planned.append(_PlannedResource("", "AWS::Events::EventBus", self.spec.bus_name, {}))
        return planned

    def _create_resources(self) -> None:
        for planned in self._planned:
            self._create(planned)
        self.failed_events_queue_url = self._resources.refs["FailedEventsQueue"]
        self.delivery_queue_url = self._fresh_queue(
            self.delivery_queue_name, {"VisibilityTimeout": str(DELIVERY_VISIBILITY_SECONDS)}
        )

    def _create(self, planned: _PlannedResource) -> None:
        """Create one resource in moto (or just name it, for functions and roles) and record Ref/GetAtt."""
        kind, name, properties, resources = planned.kind, planned.name, planned.properties, self._resources
        clients = self._clients
        if kind == "AWS::SQS::Queue":
            attributes = {
                key: str(self._resolver.value(properties[key])) for key in _QUEUE_ATTRIBUTES if key in properties
            }
            url = self._fresh_queue(name, attributes)
            resources.add(planned.logical_id, url, Arn=self._queue_arn(url), QueueName=name, QueueUrl=url)
        elif kind == "AWS::SNS::Topic":
            arn = str(clients["sns"].create_topic(Name=name)["TopicArn"])
            self._teardown.append(("topic", arn))
            resources.add(planned.logical_id, arn, TopicArn=arn, TopicName=name)
        elif kind == "AWS::DynamoDB::Table":
            dynamodb = clients["dynamodb"]
            with contextlib.suppress(dynamodb.exceptions.ResourceNotFoundException):
                dynamodb.delete_table(TableName=name)  # left over from a stack that died in this process
            table = dynamodb.create_table(
                TableName=name,
                AttributeDefinitions=self._resolver.value(properties["AttributeDefinitions"]),
                KeySchema=self._resolver.value(properties["KeySchema"]),
                BillingMode=str(self._resolver.value(properties.get("BillingMode", "PAY_PER_REQUEST"))),
            )["TableDescription"]
            self._teardown.append(("table", name))
            ttl = properties.get("TimeToLiveSpecification", {})
            if ttl.get("AttributeName"):
                dynamodb.update_time_to_live(
                    TableName=name, TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True}
                )
            resources.add(planned.logical_id, name, Arn=str(table["TableArn"]))
        elif kind == "AWS::SecretsManager::Secret":
            secrets = clients["secretsmanager"]
            with contextlib.suppress(secrets.exceptions.ResourceNotFoundException):
                secrets.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
            value = self._secret_value(planned)
            arn = str(secrets.create_secret(Name=name, Description="aftercall local stack", SecretString=value)["ARN"])
            self._teardown.append(("secret", name))
            resources.add(planned.logical_id, arn, Id=arn)
        elif kind == "AWS::Events::EventBus":
            if name != "default":
                try:
                    clients["events"].create_event_bus(Name=name)
                except ClientError as exc:
                    if _error_code(exc) != "ResourceAlreadyExistsException":
                        raise
                self._teardown.append(("bus", name))
            arn = f"arn:aws:events:{REGION}:{ACCOUNT_ID}:event-bus/{name}"
            if planned.logical_id:
                resources.add(planned.logical_id, name, Arn=arn, Name=name)
        elif kind == "AWS::Scheduler::ScheduleGroup":
            scheduler = clients["scheduler"]
            # moto answers deleting a missing group with a 500 (KeyError), so look first.
            with contextlib.suppress(scheduler.exceptions.ResourceNotFoundException):
                scheduler.get_schedule_group(Name=name)
                scheduler.delete_schedule_group(Name=name)
            arn = str(scheduler.create_schedule_group(Name=name)["ScheduleGroupArn"])
            self._teardown.append(("schedule group", name))
            resources.add(planned.logical_id, name, Arn=arn)
        elif kind == "AWS::IAM::Role":
            # Nothing local assumes roles (moto's Scheduler never fires): the ARN is all anyone reads.
            resources.add(planned.logical_id, name, Arn=f"arn:aws:iam::{ACCOUNT_ID}:role/{name}", RoleId=name)
        elif kind in FUNCTION_TYPES:
            resources.add(planned.logical_id, name, Arn=_function_arn(name))
        elif kind == FUNCTION_URL_TYPE:
            pass  # served once the function runs (see _start_functions)
        else:
            raise AssertionError(f"unplanned resource type {kind}")

    def _secret_value(self, planned: _PlannedResource) -> str:
        """The secret as CloudFormation would make it (generated key included); the CRM secret gets the
        fake CRM's token, so the handler authenticates against it exactly as against the real CRM."""
        properties = planned.properties
        if "SecretString" in properties:
            value: Any = str(self._resolver.value(properties["SecretString"]))
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        else:
            generate = self._resolver.value(properties.get("GenerateSecretString", {}))
            value = json.loads(generate.get("SecretStringTemplate") or "{}") if generate else {}
            alphabet = string.ascii_letters + string.digits
            if generate and not generate.get("ExcludePunctuation"):
                alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
            generated = "".join(secrets_module.choice(alphabet) for _ in range(int(generate.get("PasswordLength", 32))))
            if generate and generate.get("GenerateStringKey"):
                value[str(generate["GenerateStringKey"])] = generated
            elif generate:
                value = generated
        if planned.logical_id == CRM_SECRET and self.external_crm_url is not None:
            value = self.external_crm_secret or (value if isinstance(value, dict) else {})
        elif planned.logical_id == CRM_SECRET:
            value = {**(value if isinstance(value, dict) else {}), "access_token": self.crm.token}
        return value if isinstance(value, str) else json.dumps(value)

    def _create_rule(self) -> None:
        """The template's rule, pattern and retry policy as they are; only the target is the delivery queue."""
        spec, events = self.spec, self._clients["events"]
        events.put_rule(
            Name=spec.rule_name,
            EventBusName=spec.bus_name,
            EventPattern=json.dumps(spec.event_pattern),
            State="ENABLED",
            Description="Conversation Ended events to the EndHandler (locally: to the delivery queue)",
        )
        self._teardown.append(("rule", spec.rule_name))
        answer = events.put_targets(
            Rule=spec.rule_name,
            EventBusName=spec.bus_name,
            Targets=[
                {
                    "Id": DELIVERY_TARGET_ID,
                    "Arn": self._queue_arn(self.delivery_queue_url),
                    # Without a transformer moto's SQS deliveries lack `account`; this delivers the whole event.
                    "InputTransformer": {"InputPathsMap": {}, "InputTemplate": "<aws.events.event.json>"},
                    "RetryPolicy": {
                        "MaximumRetryAttempts": spec.rule_max_retry_attempts,
                        "MaximumEventAgeInSeconds": spec.rule_max_event_age_seconds,
                    },
                    "DeadLetterConfig": {"Arn": self._resources.attributes["FailedEventsQueue"]["Arn"]},
                }
            ],
        )
        if answer.get("FailedEntryCount"):
            raise RuntimeError(f"moto refused the rule target: {answer.get('FailedEntries')}")

    def _fresh_queue(self, name: str, attributes: dict[str, str]) -> str:
        """An empty queue with these attributes (one left over in this process is replaced)."""
        sqs = self._clients["sqs"]
        try:
            sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])
        except ClientError as exc:
            if "NonExistentQueue" not in _error_code(exc):
                raise
        url = str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
        self._teardown.append(("queue", url))
        return url

    def _queue_arn(self, url: str) -> str:
        attributes = self._clients["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attributes["Attributes"]["QueueArn"])

    def _create_cloudformation_stack(self) -> dict[str, str]:
        """Register the stack in moto so ``describe_stacks`` resolves ``--stack NAME`` as in AWS.

        The template's Outputs, each resolved to its local value; the one resource is a marker
        parameter (CloudFormation wants one resource, and the real ones exist already).
        """
        outputs: dict[str, str] = {}
        for key, output in self._template.get("Outputs", {}).items():
            condition = output.get("Condition")
            if condition is not None and not self._resolver.conditions[condition]:
                continue
            outputs[key] = self._resources.value(self._resolver.value(output["Value"]), f"output {key}")
        if self._timeout_overridden and "EndHandlerTimeoutSeconds" in outputs:
            # Replay waits longer than this: an override (tests) is rounded up to whole seconds.
            outputs["EndHandlerTimeoutSeconds"] = str(math.ceil(self.function_timeout))
        description = " ".join(str(self._template.get("Description", "aftercall")).split())
        template = {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": f"{description} (local stack)"[:1024],
            "Parameters": {name: {"Type": "String"} for name in self.template_parameters},
            "Resources": {
                "LocalStackMarker": {
                    "Type": "AWS::SSM::Parameter",
                    "Properties": {
                        "Name": f"/aftercall/local/{self.stack_name}",
                        "Type": "String",
                        "Value": "this stack runs on the aftercall local stack (moto)",
                    },
                }
            },
            "Outputs": {key: {"Value": value} for key, value in outputs.items()},
        }
        cloudformation = self._clients["cloudformation"]
        with contextlib.suppress(ClientError):
            cloudformation.describe_stacks(StackName=self.stack_name)
            cloudformation.delete_stack(StackName=self.stack_name)  # left over in this process
        cloudformation.create_stack(
            StackName=self.stack_name,
            TemplateBody=json.dumps(template),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in self.template_parameters.items()],
            Tags=[{"Key": "aftercall:local", "Value": "true"}],
        )
        self._teardown.append(("stack", self.stack_name))
        stack = cloudformation.describe_stacks(StackName=self.stack_name)["Stacks"][0]
        return {item["OutputKey"]: item["OutputValue"] for item in stack.get("Outputs", [])}

    def _delete_resources(self) -> None:
        """Best effort: leave moto as we found it, so a later stack in this process starts clean."""
        while self._teardown:
            kind, name = self._teardown.pop()
            try:
                self._delete(kind, name)
            except (ClientError, BotoCoreError) as exc:
                log.warning("could not delete local %s %s: %s", kind, name, exc)
        self._clients.clear()

    def _delete(self, kind: str, name: str) -> None:
        clients, bus = self._clients, self.spec.bus_name
        if kind == "stack":
            clients["cloudformation"].delete_stack(StackName=name)
        elif kind == "rule":
            clients["events"].remove_targets(Rule=name, EventBusName=bus, Ids=[DELIVERY_TARGET_ID])
            clients["events"].delete_rule(Name=name, EventBusName=bus)
        elif kind == "secret":
            clients["secretsmanager"].delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
        elif kind == "table":
            clients["dynamodb"].delete_table(TableName=name)
        elif kind == "queue":
            clients["sqs"].delete_queue(QueueUrl=name)
        elif kind == "topic":
            clients["sns"].delete_topic(TopicArn=name)
        elif kind == "schedule group":
            clients["scheduler"].delete_schedule_group(Name=name)
        elif kind == "bus":
            clients["events"].delete_event_bus(Name=name)
        else:
            raise AssertionError(f"unknown resource kind {kind}")

    # --- the functions ------------------------------------------------------------------------------

    def _function_config(self, logical_id: str, name: str) -> _FunctionConfig:
        """How the template runs this function, with local values (and the overrides for the EndHandler)."""
        resolver, resources = self._resolver, self._resources
        properties = function_properties(self._template, logical_id)
        is_end_handler = logical_id == END_HANDLER
        variables = properties.get("Environment", {}).get("Variables", {})
        environment = {
            key: resources.value(resolver.value(value), f"{logical_id}'s environment variable {key}")
            for key, value in variables.items()
        }
        if is_end_handler:
            environment["CRM_BASE_URL"] = self.crm_url
            environment.update(self.end_handler_environment)
        reserved = properties.get("ReservedConcurrentExecutions")
        logging_config = properties.get("LoggingConfig", {})
        log_group = resolver.value(logging_config.get("LogGroup", f"/aws/lambda/{name}"))
        if isinstance(log_group, dict) and log_group.get("Ref") in self._template["Resources"]:
            log_group = resolver.value(self._template["Resources"][log_group["Ref"]]["Properties"]["LogGroupName"])
        return _FunctionConfig(
            logical_id=logical_id,
            name=name,
            arn=_function_arn(name),
            handler=str(properties["Handler"]),
            code_dir=PROJECT_ROOT / str(properties["CodeUri"]),
            timeout=self.function_timeout if is_end_handler else float(resolver.value(properties.get("Timeout", 3))),
            memory_mb=int(resolver.value(properties.get("MemorySize", 128))),
            log_level=str(resolver.value(logging_config.get("ApplicationLogLevel", "INFO"))),
            log_group_name=str(log_group),
            environment=environment,
            # Other functions only serve direct invocations and function URLs here: two environments at most.
            concurrency=self.workers if is_end_handler else min(2, int(resolver.value(reserved or 1))),
            log_path=self._log_path(logical_id),
            end_function=self.end_function if is_end_handler else None,
        )

    def _start_functions(self) -> None:
        for planned in self._planned:
            if planned.kind not in FUNCTION_TYPES:
                continue
            config = self._function_config(planned.logical_id, planned.name)
            pool = _FunctionPool(config, self._worker_env(config), self._stopping, self._run_job, self._recover)
            self._pools[config.name] = pool
            self.log_paths[config.name] = config.log_path
        self.function_environment = dict(self._end_handler.config.environment)
        for pool in self._pools.values():
            pool.start()
        for planned in self._planned:
            if planned.kind == FUNCTION_URL_TYPE:
                url = self._serve(_FunctionUrlHandler, f"{planned.logical_id}", function=planned.name)
                self.function_urls[planned.name] = url
                self._resources.add(
                    planned.logical_id,
                    _function_arn(planned.name),
                    FunctionUrl=url,
                    FunctionArn=_function_arn(planned.name),
                )

    def environment_of(self, function: str) -> dict[str, str]:
        """The environment ``function``'s processes run with: the template's variables and Lambda's own."""
        pool = self._pools.get(function)
        if pool is None:
            raise ValueError(f"no function {function!r} in this stack; it has {', '.join(self._pools)}")
        return self._worker_env(pool.config)

    @property
    def _end_handler(self) -> _FunctionPool:
        return self._pools[self.function_name]

    # --- environments for clients and for the function ----------------------------------------------

    def _client_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_ENDPOINT_URL_LAMBDA": self.invoke_url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
            "AWS_MAX_ATTEMPTS": "1",
            "AFTERCALL_STACK": self.stack_name,
            "AFTERCALL_FAKE_CRM_URL": self.crm_url,
        }

    def _worker_env(self, config: _FunctionConfig) -> dict[str, str]:
        """A Lambda-like environment: the template's variables, Lambda's own, and moto as AWS."""
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AWS_", "POWERTOOLS_", "AFTERCALL_", "_X_AMZN", "_HANDLER", "LAMBDA_"))
        }
        python_path = [str(PROJECT_ROOT / "layers" / "aftercall"), str(PROJECT_ROOT / "ops")]
        if os.environ.get("PYTHONPATH"):
            python_path.append(os.environ["PYTHONPATH"])
        return {
            **inherited,
            **config.environment,
            "AWS_LAMBDA_FUNCTION_NAME": config.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": config.log_group_name,
            "AWS_LAMBDA_LOG_FORMAT": "JSON",
            "AWS_LAMBDA_LOG_LEVEL": config.log_level,
            "LAMBDA_TASK_ROOT": str(config.code_dir),
            "_HANDLER": config.handler,
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_CONFIG_FILE": os.devnull,  # nothing from ~/.aws may point the function elsewhere
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "AFTERCALL_LOCAL": "true",
            "PYTHONPATH": os.pathsep.join(python_path),
            "PYTHONUNBUFFERED": "1",
        }

    # --- dispatcher ---------------------------------------------------------------------------------

    def _start_invoke_server(self) -> None:
        self.invoke_url = self._serve(_InvokeHandler, "invoke").rstrip("/")

    def _serve(self, handler: type[BaseHTTPRequestHandler], label: str, function: str = "") -> str:
        """An HTTP server of ours on a free loopback port; returns its base URL (ending in ``/``)."""
        server = _InvokeServer(("127.0.0.1", 0), handler)
        server.stack = self
        server.function = function
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"{self.stack_name}-{label}", daemon=True
        )
        thread.start()
        self._http_servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/"

    def _start_poller(self) -> None:
        self._poller = threading.Thread(target=self._poll_loop, name=f"{self.stack_name}-poller", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        """Long-poll the delivery queue while there is room; keep held messages invisible."""
        sqs, pool = self._clients["sqs"], self._end_handler
        while not self._stopping.is_set():
            self._renew_visibility()
            if pool.due_backlog() >= self.workers:  # every environment has work waiting: let them catch up
                self._stopping.wait(0.05)
                continue
            failed = False
            with self._intake_lock:  # see in_flight(): a received message is held before the lock is let go
                try:
                    answer = sqs.receive_message(
                        QueueUrl=self.delivery_queue_url,
                        MaxNumberOfMessages=10,
                        WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
                        VisibilityTimeout=DELIVERY_VISIBILITY_SECONDS,
                        AttributeNames=["SentTimestamp"],
                    )
                except (ClientError, BotoCoreError) as exc:
                    answer, failed = {}, True
                    if not self._stopping.is_set():
                        log.warning("could not read the delivery queue (%s); trying again", exc)
                for message in answer.get("Messages", []):
                    self._accept(message)
            if failed:
                self._stopping.wait(0.5)

    def _accept(self, message: Mapping[str, Any]) -> None:
        message_id = str(message["MessageId"])
        with self._held_lock:
            known = self._held.get(message_id)
            if known is not None:  # seen again after its visibility lapsed: keep the one job, new handle
                known.receipt_handle = str(message["ReceiptHandle"])
                known.invisible_until = time.monotonic() + DELIVERY_VISIBILITY_SECONDS
                return
        try:
            payload: Any = json.loads(message["Body"])
        except ValueError:
            payload = message["Body"]  # the handler refuses (and parks) what is not an event
        if isinstance(payload, dict) and "detail-type" in payload:
            payload.pop("ingestion-time", None)  # moto's internal field, not part of EventBridge's event
        event = _AsyncEvent(
            payload=payload,
            message_id=message_id,
            receipt_handle=str(message["ReceiptHandle"]),
            sent_ms=int(message.get("Attributes", {}).get("SentTimestamp") or time.time() * 1000),
            invisible_until=time.monotonic() + DELIVERY_VISIBILITY_SECONDS,
        )
        with self._held_lock:
            self._held[message_id] = event
        self._end_handler.push(time.monotonic(), event)

    def _renew_visibility(self) -> None:
        with self._held_lock:
            now = time.monotonic()
            due = [e for e in self._held.values() if e.invisible_until - now < DELIVERY_VISIBILITY_SECONDS / 2]
        for event in due:
            try:
                self._clients["sqs"].change_message_visibility(
                    QueueUrl=self.delivery_queue_url,
                    ReceiptHandle=event.receipt_handle,
                    VisibilityTimeout=DELIVERY_VISIBILITY_SECONDS,
                )
                event.invisible_until = time.monotonic() + DELIVERY_VISIBILITY_SECONDS
            except (ClientError, BotoCoreError) as exc:
                log.warning("could not keep the message for %s invisible: %s", event.label, exc)

    def _run_job(self, pool: _FunctionPool, job: _Job, environment: _ExecutionEnvironment) -> None:
        if isinstance(job, _SyncRequest):
            outcome = pool.execute(environment, job.payload, job.request_id)
            if outcome is None:
                job.future.set_exception(RuntimeError("the local stack stopped during the invocation"))
            else:
                job.future.set_result(outcome)
        else:
            self._run_async(pool, job, environment)

    def _recover(self, job: _Job, exc: Exception) -> None:
        """After a bug of ours while running ``job``: fail the caller, or hand the event back to the queue."""
        if isinstance(job, _SyncRequest):
            if not job.future.done():
                job.future.set_exception(exc)
        else:
            self._release(job, delay=5)

    def _run_async(self, pool: _FunctionPool, event: _AsyncEvent, environment: _ExecutionEnvironment) -> None:
        age = time.time() - event.sent_ms / 1000
        if age > self.max_event_age:
            log.error("%s: %.0f s old, over MaximumEventAgeInSeconds (%.0f)", event.label, age, self.max_event_age)
            self._give_up(pool, event, "EventAgeExceeded")
            return
        event.attempts += 1
        outcome = pool.execute(environment, event.payload, event.request_id)
        if outcome is None:  # stopping: the message stays in the delivery queue, nothing is lost
            return
        if outcome.ok:
            log.info(
                "%s: %s in %.2f s (attempt %d)", event.label, _describe(outcome.result), outcome.seconds, event.attempts
            )
            self._finish(event)
            return
        event.last_failure = outcome
        total = 1 + self.max_retries
        if event.attempts <= self.max_retries:
            delays = self.retry_delays or (0.0,)
            delay = delays[min(event.attempts - 1, len(delays) - 1)]
            log.warning(
                "%s: attempt %d of %d failed (%s); retrying in %g s",
                event.label,
                event.attempts,
                total,
                outcome.error_summary,
                delay,
            )
            event.after_invocation = pool.newest_running()
            pool.push(time.monotonic() + delay, event)
        else:
            log.error("%s: attempt %d of %d failed (%s)", event.label, event.attempts, total, outcome.error_summary)
            self._give_up(pool, event, "RetriesExhausted")

    def on_failure_record(self, event: _AsyncEvent, condition: str) -> dict[str, Any]:
        """Lambda's ``OnFailure`` destination record, field for field."""
        record: dict[str, Any] = {
            "version": "1.0",
            "timestamp": _now_iso(),
            "requestContext": {
                "requestId": event.request_id,
                "functionArn": f"{self.function_arn}:$LATEST",
                "condition": condition,
                "approximateInvokeCount": event.attempts,
            },
            "requestPayload": event.payload,
        }
        if event.last_failure is not None and event.last_failure.error is not None:
            record["responseContext"] = {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
            record["responsePayload"] = event.last_failure.error
        return record

    def _give_up(self, pool: _FunctionPool, event: _AsyncEvent, condition: str) -> None:
        """Write the OnFailure record, then (only then) delete the delivery message."""
        record = self.on_failure_record(event, condition)
        try:
            self._clients["sqs"].send_message(QueueUrl=self.failed_events_queue_url, MessageBody=json.dumps(record))
        except (ClientError, BotoCoreError) as exc:
            pool.count("dlq_write_failures")
            log.error(
                "%s: could not write the OnFailure record (%s); the event stays in the delivery queue and runs again",
                event.label,
                exc,
            )
            self._release(event, delay=5)
            return
        pool.count("sent_to_dlq")
        log.error("%s: sent to the failed-events queue (%s, %d attempts)", event.label, condition, event.attempts)
        self._finish(event)

    def _finish(self, event: _AsyncEvent) -> None:
        try:
            self._clients["sqs"].delete_message(QueueUrl=self.delivery_queue_url, ReceiptHandle=event.receipt_handle)
        except (ClientError, BotoCoreError) as exc:
            log.warning(
                "%s: could not delete the delivery message (%s); it will run again (idempotent)", event.label, exc
            )
        with self._held_lock:
            self._held.pop(event.message_id, None)

    def _release(self, event: _AsyncEvent, delay: int) -> None:
        with self._held_lock:
            self._held.pop(event.message_id, None)
            # Invisible in the queue and held by nobody until it reappears: in_flight() still counts it.
            self._returning[event.message_id] = (event.payload, time.monotonic() + delay)
        try:
            self._clients["sqs"].change_message_visibility(
                QueueUrl=self.delivery_queue_url, ReceiptHandle=event.receipt_handle, VisibilityTimeout=delay
            )
        except (ClientError, BotoCoreError) as exc:
            with self._held_lock:
                self._returning[event.message_id] = (event.payload, event.invisible_until)
            log.warning(
                "%s: could not release the delivery message (%s); it reappears after its timeout", event.label, exc
            )

    # --- the public API the CLI and the tests use ------------------------------------------------------

    def invoke(self, payload: Any, timeout: float | None = None, *, function: str | None = None) -> InvocationOutcome:
        """A synchronous (RequestResponse) invocation of the EndHandler (or ``function``, by name).

        It shares the environments with async events but goes ahead of queued ones: the caller waits.
        """
        if not self._started or self._stopping.is_set():
            raise RuntimeError("the local stack is not running")
        pool = self._pools.get(function or self.function_name)
        if pool is None:
            raise ValueError(f"no function {function!r} in this stack; it has {', '.join(self._pools)}")
        request = _SyncRequest(payload=payload)
        pool.push(0.0, request)
        wait = timeout if timeout is not None else INIT_TIMEOUT_SECONDS + pool.config.timeout + 10
        try:
            return request.future.result(timeout=wait)
        except FutureTimeoutError:
            raise TimeoutError(f"no environment became free to run the invocation within {wait:.0f} s") from None

    def invoke_async(self, payload: Any) -> str:
        """An ``Event`` invocation of the EndHandler: queued like an EventBridge delivery; returns the message id."""
        answer = self._clients["sqs"].send_message(QueueUrl=self.delivery_queue_url, MessageBody=json.dumps(payload))
        return str(answer["MessageId"])

    def function_named(self, name: str, qualifier: str | None = None) -> str | None:
        """Which of our functions ``name`` (name, ARN or partial ARN, optionally qualified) is, if any."""
        base = name.split("function:", 1)[1] if "function:" in name else name
        base, _, inline_qualifier = base.partition(":")
        # $LATEST, or the alias AutoPublishAlias gives (locally there is one version: the code as it is).
        aliases = {"$LATEST"} | {
            str(r["Properties"]["AutoPublishAlias"])
            for r in self._template["Resources"].values()
            if r.get("Type") in FUNCTION_TYPES and "AutoPublishAlias" in r.get("Properties", {})
        }
        if not {q for q in (inline_qualifier, qualifier) if q} <= aliases:
            return None
        if name.startswith("arn:") and not name.startswith(_function_arn(base)):
            return None  # another region or account
        return base if base in self._pools else None

    def is_function(self, name: str, qualifier: str | None = None) -> bool:
        """Whether ``name`` is the EndHandler (by name, ARN or partial ARN)."""
        return self.function_named(name, qualifier) == self.function_name

    def function_arn_for(self, name: str) -> str:
        if name.startswith("arn:"):
            return name
        return _function_arn(name.split("function:")[-1])

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Block until the delivery queue is empty and nothing runs or waits for a retry."""
        if not self._started or self._stopping.is_set():
            raise RuntimeError("the local stack is not running")
        deadline = time.monotonic() + timeout
        while True:
            pending = self._pending()
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"local stack {self.stack_name} not idle after {timeout:g} s: {', '.join(pending)}")
            time.sleep(0.05)

    def _pending(self) -> list[str]:
        in_flight = retries = queued = 0
        for pool in self._pools.values():
            with pool.cond:
                waiting_retries = sum(1 for _, _, job in pool.heap if isinstance(job, _AsyncEvent) and job.attempts)
                retries += waiting_retries
                queued += len(pool.heap) - waiting_retries
                in_flight += pool.in_flight
        pending = []
        if in_flight:
            pending.append(f"{in_flight} invocation(s) in flight")
        if retries:
            pending.append(f"{retries} retry(ies) pending")
        if queued:
            pending.append(f"{queued} invocation(s) waiting for a free environment")
        attributes = self._clients["sqs"].get_queue_attributes(
            QueueUrl=self.delivery_queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        visible = int(attributes.get("ApproximateNumberOfMessages", 0))
        invisible = int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0))
        if visible:
            pending.append(f"{visible} message(s) in the delivery queue")
        if invisible and not pending:
            pending.append(f"{invisible} delivery message(s) not yet deleted")
        return pending

    def in_flight(self) -> list[Any]:
        """Every event handed to the EndHandler and not finished yet, as a snapshot.

        That is: waiting in the delivery queue (peeked: received, then made visible again at once),
        or held by the dispatcher (waiting for an environment or a retry, or running). Taken while
        the poller is not between a receive and holding what it received, so an event moving on
        is seen at least once; read the outcomes (processed, failed-events queue) after this to
        account for every event.
        """
        if not self._started or self._stopping.is_set():
            raise RuntimeError("the local stack is not running")
        sqs = self._clients["sqs"]
        with self._intake_lock:
            peeked: dict[str, Mapping[str, Any]] = {}
            for _ in range(10_000):  # bounded: each receive brings new messages or ends the loop
                batch = sqs.receive_message(
                    QueueUrl=self.delivery_queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=0,
                    VisibilityTimeout=DELIVERY_VISIBILITY_SECONDS,
                ).get("Messages", [])
                fresh = [message for message in batch if message["MessageId"] not in peeked]
                peeked.update((message["MessageId"], message) for message in batch)
                if not fresh:
                    break
            handles = [str(message["ReceiptHandle"]) for message in peeked.values()]
            for start in range(0, len(handles), 10):
                sqs.change_message_visibility_batch(
                    QueueUrl=self.delivery_queue_url,
                    Entries=[
                        {"Id": str(index), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                        for index, handle in enumerate(handles[start : start + 10])
                    ],
                )
            with self._held_lock:
                held = [event.payload for event in self._held.values()]
                now = time.monotonic()
                for message_id, (payload, visible_at) in list(self._returning.items()):
                    if visible_at + 1 < now:  # visible again for a while: the peek or the poller has it
                        del self._returning[message_id]
                    else:
                        held.append(payload)
        waiting = []
        for message in peeked.values():
            try:
                waiting.append(json.loads(message["Body"]))
            except ValueError:
                waiting.append(message["Body"])
        return waiting + held

    def counts(self, function: str | None = None) -> dict[str, int]:
        """The EndHandler's (or ``function``'s) counters: invocations, succeeded, failed_attempts,
        timeouts, sent_to_dlq, in_flight, retries_pending, cold_starts."""
        pool = self._pools.get(function or self.function_name)
        if pool is None:
            return {}
        with pool.cond:
            counts = dict(pool.counts)
            counts["in_flight"] = pool.in_flight
            counts["retries_pending"] = sum(
                1 for _, _, job in pool.heap if isinstance(job, _AsyncEvent) and job.attempts
            )
        counts["cold_starts"] = sum(environment.starts for environment in pool.environments)
        return counts

    def worker_pids(self, function: str | None = None) -> list[int]:
        """Process ids of the EndHandler's (or ``function``'s) warm execution environments."""
        pool = self._pools.get(function or self.function_name)
        environments = pool.environments if pool is not None else []
        return [pid for pid in (environment.pid for environment in environments) if pid is not None]

    def log_records(self, function: str | None = None) -> list[dict[str, Any]]:
        """Every JSON line in the EndHandler's (or ``function``'s) log so far: Powertools, EMF, platform."""
        path = self.log_paths.get(function or self.function_name, self.log_path)
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` pointed at this stack (Lambda at the Invoke endpoint)."""
        endpoint = self.invoke_url if service == "lambda" else self.moto_url
        return boto3.session.Session().client(  # type: ignore[call-overload]
            service,
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=LOCAL_ACCESS_KEY,
            aws_secret_access_key=LOCAL_SECRET_KEY,
            config=Config(
                retries={"total_max_attempts": 1}, read_timeout=INIT_TIMEOUT_SECONDS + self.function_timeout + 30
            ),
        )


# --- running it in a terminal ---------------------------------------------------------------------


def _instructions(stack: LocalStack) -> Iterator[str]:
    yield f"# aftercall local stack {stack.stack_name!r} (Stage={stack.spec.stage}) is running. In another shell:"
    for key, value in stack.env.items():
        yield f"export {key}={shlex.quote(value)}"
    yield "unset AWS_PROFILE AWS_SESSION_TOKEN"
    yield ""
    yield f"# Stack outputs (aws cloudformation describe-stacks --stack-name {stack.stack_name}):"
    width = max(len(key) for key in stack.outputs)
    for key, value in sorted(stack.outputs.items()):
        yield f"#   {key:<{width}}  {value}"
    yield ""
    url = stack.crm_url
    if stack.external_crm_url is not None:
        yield f"# CRM: {url} (yours; the secret holds what --crm-token-file gave)"
        yield "# Ctrl-C stops it; everything lives in memory and is gone afterwards."
        return
    yield f"# Fake CRM (HubSpot API): {url}  ({len(CUSTOMERS)} contacts from aftercall_ops.generate.CUSTOMERS)"
    yield "#   make every CRM request fail:"
    fault = json.dumps({"kind": "status", "status": 503})
    yield f"#     curl -s -X POST {url}/__admin/faults -H 'Content-Type: application/json' -d '{fault}'"
    yield f"#   back to normal:  curl -s -X DELETE {url}/__admin/faults"
    yield f"#   what it holds:   curl -s {url}/__admin/state"
    for function, function_url in stack.function_urls.items():
        yield f"# Function URL of {function}: {function_url}"
    yield f"# JSON logs of the functions: {stack.state_dir}/*.log (End function: {stack.log_path.name})"
    yield (
        f"# {stack.workers} environment(s), timeout {stack.function_timeout:g} s, "
        f"{stack.max_retries} retries after {', '.join(f'{d:g}' for d in stack.retry_delays) or '0'} s."
    )
    yield "# Ctrl-C stops it; everything lives in memory and is gone afterwards."


def _external_crm_url(url: str) -> str:
    """The CRM endpoint the local stack may use: HTTPS, or plain HTTP to loopback only."""
    try:
        return check_outbound_url(url, allow_loopback_http=True)
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None


def crm_secret_from_file(path: Path) -> dict[str, str]:
    """The CRM secret from a file: a JSON object (every key, for Salesforce or Zendesk), or a bare token
    (HubSpot's ``access_token``)."""
    text = path.read_text().strip()
    if not text:
        raise ValueError(f"{path} is empty: put the CRM's token (or its secret as a JSON object) in it")
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError(f"{path} starts with '{{' but is not a JSON object") from None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError(f"{path} must hold a JSON object of strings")
        return value
    return {"access_token": text}


def serve(
    stack_name: str,
    parameters: dict[str, str],
    *,
    moto_port: int,
    workers: int | None,
    crm_url: str | None = None,
    crm_secret: Mapping[str, str] | None = None,
) -> None:
    """Run the local stack until Ctrl-C or SIGTERM, printing how to use it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with LocalStack(
            stack_name, parameters, workers=workers, moto_port=moto_port, crm_url=crm_url, crm_secret=crm_secret
        ) as stack:
            print("\n".join(_instructions(stack)), flush=True)
            while not stop.wait(0.5):
                pass
            print("# stopping the local stack ...", file=sys.stderr, flush=True)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        log.removeHandler(handler)


def _parse_parameters(items: Sequence[str]) -> dict[str, str]:
    parameters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--param wants Key=Value, got {item!r}")
        parameters[key] = value
    return parameters


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aftercall_ops.local", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--stack", default=DEFAULT_STACK_NAME, help="stack name (default %(default)s)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="template parameter")
    parser.add_argument("--moto-port", type=int, default=0, help="moto's port (0 picks a free one)")
    parser.add_argument("--workers", type=int, default=None, help="environments (default: ReservedConcurrency)")
    args = parser.parse_args(argv)
    serve(args.stack, _parse_parameters(args.param), moto_port=args.moto_port, workers=args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
