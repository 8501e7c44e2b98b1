"""The local stack: the whole aftercall pipeline on loopback, with no AWS account and no Docker.

Why it exists: the handler, the CLI and the tests must run against the same shapes as in AWS
(EventBridge envelope, Lambda's async retries, the ``OnFailure`` record, stack outputs) without
an account. Everything is taken from ``template.yaml`` through :func:`stack_spec`, so local and
cloud cannot drift apart:

* moto in server mode on 127.0.0.1 holds the bus, the rule (with the template's pattern), the
  failed-events queue, the idempotency table, the CRM secret and a CloudFormation stack whose
  outputs have the template's output keys, so ``--stack NAME`` resolves as in AWS;
* moto cannot run Lambda, so the rule targets an SQS "delivery" queue (with an input transformer
  that delivers the whole event, ``account`` included), and a dispatcher gives the real
  ``functions/end_handler/app.py`` Lambda's async semantics: one process per unit of reserved
  concurrency, retries with delays, timeouts that kill the process, then an ``OnFailure`` record
  in the failed-events queue in the exact AWS shape;
* a fake HubSpot (:class:`FakeCrm`) seeded with :data:`aftercall_ops.generate.CUSTOMERS`;
* a Lambda ``Invoke`` endpoint for ``aftercall replay --mode invoke`` (boto3 honours
  ``AWS_ENDPOINT_URL_LAMBDA``).

``python -m aftercall_ops.local`` (or :func:`serve`) runs it in a terminal until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import logging
import math
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
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

from aftercall_ops.fake_crm import FakeCrm
from aftercall_ops.generate import CUSTOMERS
from aftercall_ops.template import PROJECT_ROOT, Resolver, StackSpec, load_template, stack_spec

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

#: Names a moto server in this process already uses: moto's state is per process, not per server.
_CLAIMS: dict[str, str] = {}
_CLAIMS_LOCK = threading.Lock()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


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


# --- template values the local stack needs besides the StackSpec -----------------------------------


@dataclass(frozen=True)
class _TemplateExtras:
    """Further values read from template.yaml (never copied by hand)."""

    handler: str
    code_dir: Path
    memory_mb: int
    log_level: str
    log_group_name: str
    failed_queue_visibility: int
    table_properties: dict[str, Any]
    secret_name: str
    alarm_topic_name: str
    output_keys: tuple[str, ...]
    description: str

    @classmethod
    def read(cls, template: dict[str, Any], parameters: Mapping[str, str], stack_name: str) -> _TemplateExtras:
        resolver = Resolver(template, dict(parameters), stack_name)
        resources = template["Resources"]
        function = resources["EndHandler"]["Properties"]
        table = resources["IdempotencyTable"]["Properties"]
        return cls(
            handler=str(function["Handler"]),
            code_dir=PROJECT_ROOT / str(function["CodeUri"]),
            memory_mb=int(resolver.value(function.get("MemorySize", 128))),
            log_level=str(resolver.value(function["LoggingConfig"]["ApplicationLogLevel"])),
            log_group_name=str(resolver.value(resources["EndHandlerLogGroup"]["Properties"]["LogGroupName"])),
            failed_queue_visibility=int(resources["FailedEventsQueue"]["Properties"].get("VisibilityTimeout", 30)),
            table_properties={
                "AttributeDefinitions": table["AttributeDefinitions"],
                "KeySchema": table["KeySchema"],
                "BillingMode": table["BillingMode"],
                "ttl_attribute": table.get("TimeToLiveSpecification", {}).get("AttributeName"),
            },
            secret_name=str(resolver.value(resources["CrmSecret"]["Properties"]["Name"])),
            alarm_topic_name=str(resolver.value(resources["AlarmTopic"]["Properties"]["TopicName"])),
            output_keys=tuple(template.get("Outputs", {})),
            description=" ".join(str(template.get("Description", "aftercall")).split()),
        )


# --- the Lambda Invoke endpoint -------------------------------------------------------------------

_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")


class _InvokeServer(ThreadingHTTPServer):
    daemon_threads = True
    stack: LocalStack


class _InvokeHandler(BaseHTTPRequestHandler):
    """``POST /2015-03-31/functions/{name}/invocations``, answered as Lambda answers it."""

    protocol_version = "HTTP/1.1"
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
        if match is None:
            self._error(501, "NotImplementedException", "the local Lambda endpoint implements only Invoke")
            return
        stack = self.server.stack
        qualifier = parse_qs(parts.query).get("Qualifier", [None])[0]
        name = unquote(match["name"])
        if not stack.is_function(name, qualifier):
            self._error(404, "ResourceNotFoundException", f"Function not found: {stack.function_arn_for(name)}")
            return
        invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if body is None or len(body) > SYNC_PAYLOAD_LIMIT:
            self._error(
                413,
                "RequestTooLargeException",
                "Request must be smaller than 6291456 bytes for the InvokeFunction operation",
            )
            return
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
            request_id = stack.invoke_async(payload)
            self._send(202, b"", {"x-amzn-RequestId": request_id})
        elif invocation_type == "RequestResponse":
            self._invoke_sync(stack, payload)
        else:
            self._error(400, "InvalidParameterValueException", f"Unsupported invocation type {invocation_type!r}")

    def _invoke_sync(self, stack: LocalStack, payload: Any) -> None:
        try:
            outcome = stack.invoke(payload)
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
        """The request body (None when it is over the size limit; the connection is then closed)."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > SYNC_PAYLOAD_LIMIT:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"Type": "User", "Message": message, "message": message}).encode()
        self._send(status, body, {"x-amzn-ErrorType": code})

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(body)


# --- the stack --------------------------------------------------------------------------------------


class LocalStack:
    """The aftercall stack on loopback: moto, the fake CRM, the dispatcher and the Invoke endpoint.

    Use as a context manager (or ``start()``/``stop()``). ``env`` is what a client process needs
    to talk to it, ``outputs`` are the stack outputs as ``describe_stacks`` returns them.
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
    ) -> None:
        self.stack_name = stack_name
        self.parameters = {**DEFAULT_PARAMETERS, **(parameters or {})}
        for name in ("CrmSecretArn", "CrmBaseUrl"):
            if self.parameters.get(name):
                raise ValueError(
                    f"parameter {name} points at a real CRM; the local stack always uses its fake CRM "
                    "and a secret of its own, so leave it empty"
                )
        template = load_template()
        self.spec: StackSpec = stack_spec(stack_name, self.parameters, template)
        #: Every template parameter with the value this stack uses (defaults filled in).
        self.template_parameters: dict[str, str] = Resolver(template, self.parameters, stack_name).parameters
        self._extras = _TemplateExtras.read(template, self.parameters, stack_name)
        self.workers = self.spec.reserved_concurrency if workers is None else workers
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        self.function_timeout = float(
            self.spec.function_timeout_seconds if function_timeout is None else function_timeout
        )
        if self.function_timeout <= 0:
            raise ValueError("function_timeout must be positive")
        self.retry_delays = DEFAULT_RETRY_DELAYS if retry_delays is None else tuple(retry_delays)
        if any(delay < 0 for delay in self.retry_delays):
            raise ValueError("retry delays must not be negative")
        self.max_retries = self.spec.function_max_retry_attempts
        self.max_event_age = float(self.spec.function_max_event_age_seconds if max_event_age is None else max_event_age)
        self.end_function = Path(end_function or self._extras.code_dir / "end_function.py").resolve()
        if not self.end_function.is_file():
            raise FileNotFoundError(f"end_function module not found: {self.end_function}")
        self.moto_port = moto_port
        self.function_name = f"{stack_name}-EndHandler"
        self.function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"
        self.delivery_queue_name = f"{stack_name}-delivery"
        self._requested_state_dir = state_dir

        self.state_dir = Path()
        self.log_path = Path()
        self.env: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        self.crm = FakeCrm()
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
        self._platform_log: _PlatformLog | None = None
        self._environments: list[_ExecutionEnvironment] = []
        self._threads: list[threading.Thread] = []
        self._invoke_server: _InvokeServer | None = None
        self._invoke_thread: threading.Thread | None = None

        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Job]] = []
        self._seq = itertools.count()
        self._held: dict[str, _AsyncEvent] = {}  # message id -> event being worked on
        self._in_flight = 0
        self._counts = dict.fromkeys(
            ("invocations", "succeeded", "failed_attempts", "timeouts", "sent_to_dlq", "dlq_write_failures"), 0
        )

    # --- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

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
            self.crm.start()
            for customer in CUSTOMERS:
                first, _, last = customer.name.partition(" ")
                self.crm.add_contact(
                    phone=customer.phone, email=customer.email, properties={"firstname": first, "lastname": last}
                )
            self._create_resources()
            self._start_invoke_server()
            self.env = self._client_env()
            self._start_dispatcher()
        except BaseException:
            self.stop()
            raise
        log.info("local stack %s is up: moto %s, fake CRM %s", self.stack_name, self.moto_url, self.crm.url)
        return self

    def stop(self) -> None:
        """Stop everything this stack started, in order; safe to call more than once."""
        if not self._started:
            return
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        for environment in self._environments:
            environment.kill()
        for thread in self._threads:
            thread.join(timeout=15)
            if thread.is_alive():
                log.warning("thread %s did not stop within 15 s", thread.name)
        self._threads.clear()
        for environment in self._environments:
            environment.close()
        self._environments.clear()
        with self._cond:
            jobs = [job for _, _, job in self._heap]
            self._heap.clear()
            self._held.clear()
        for job in jobs:
            if isinstance(job, _SyncRequest) and not job.future.done():
                job.future.set_exception(RuntimeError("the local stack stopped"))
        if self._invoke_server is not None:
            self._invoke_server.shutdown()
            self._invoke_server.server_close()
            self._invoke_server = None
        if self._invoke_thread is not None:
            self._invoke_thread.join(timeout=5)
            self._invoke_thread = None
        self._delete_resources()
        self.crm.stop()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        if self._platform_log is not None:
            self._platform_log.close()
            self._platform_log = None
        self._release_names()
        self._started = False

    def _claim_names(self) -> None:
        """moto keeps one state per process: refuse a second live stack that would share names."""
        names = [f"stack {self.stack_name}", f"event bus {self.spec.bus_name}", f"secret {self._extras.secret_name}"]
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
        self.log_path = self.state_dir / "end-handler.log"
        self.log_path.touch()
        self._platform_log = _PlatformLog(self.log_path)

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

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
        for service in ("events", "sqs", "dynamodb", "secretsmanager", "cloudformation"):
            self._clients[service] = session.client(service, endpoint_url=self.moto_url, config=config)

    # --- resources -------------------------------------------------------------------------------

    def _create_resources(self) -> None:
        spec, extras = self.spec, self._extras
        events = self._clients["events"]
        dynamodb, secrets = self._clients["dynamodb"], self._clients["secretsmanager"]

        if spec.bus_name != "default":
            try:
                events.create_event_bus(Name=spec.bus_name)
            except ClientError as exc:
                if _error_code(exc) != "ResourceAlreadyExistsException":
                    raise
            self._teardown.append(("bus", spec.bus_name))

        self.failed_events_queue_url = self._fresh_queue(
            spec.failed_events_queue_name,
            {
                "MessageRetentionPeriod": str(spec.failed_events_retention_seconds),
                "VisibilityTimeout": str(extras.failed_queue_visibility),
            },
        )
        self.delivery_queue_url = self._fresh_queue(
            self.delivery_queue_name, {"VisibilityTimeout": str(DELIVERY_VISIBILITY_SECONDS)}
        )
        failed_arn = self._queue_arn(self.failed_events_queue_url)
        delivery_arn = self._queue_arn(self.delivery_queue_url)

        table_name = f"{self.stack_name}-IdempotencyTable"
        with contextlib.suppress(dynamodb.exceptions.ResourceNotFoundException):
            dynamodb.delete_table(TableName=table_name)  # left over from a stack that died in this process
        table = extras.table_properties
        dynamodb.create_table(
            TableName=table_name,
            AttributeDefinitions=table["AttributeDefinitions"],
            KeySchema=table["KeySchema"],
            BillingMode=table["BillingMode"],
        )
        self._teardown.append(("table", table_name))
        if table["ttl_attribute"]:
            dynamodb.update_time_to_live(
                TableName=table_name, TimeToLiveSpecification={"AttributeName": table["ttl_attribute"], "Enabled": True}
            )

        secret_value = json.dumps({"access_token": self.crm.token})
        with contextlib.suppress(secrets.exceptions.ResourceNotFoundException):
            secrets.delete_secret(SecretId=extras.secret_name, ForceDeleteWithoutRecovery=True)
        secret_arn = str(
            secrets.create_secret(
                Name=extras.secret_name,
                Description="aftercall local stack: the fake CRM's access token",
                SecretString=secret_value,
            )["ARN"]
        )
        self._teardown.append(("secret", extras.secret_name))

        rule_arn = events.put_rule(
            Name=spec.rule_name,
            EventBusName=spec.bus_name,
            EventPattern=json.dumps(spec.event_pattern),
            State="ENABLED",
            Description="Conversation Ended events to the EndHandler (locally: to the delivery queue)",
        )["RuleArn"]
        self._teardown.append(("rule", spec.rule_name))
        answer = events.put_targets(
            Rule=spec.rule_name,
            EventBusName=spec.bus_name,
            Targets=[
                {
                    "Id": DELIVERY_TARGET_ID,
                    "Arn": delivery_arn,
                    # Without a transformer moto's SQS deliveries lack `account`; this delivers the whole event.
                    "InputTransformer": {"InputPathsMap": {}, "InputTemplate": "<aws.events.event.json>"},
                    "RetryPolicy": {
                        "MaximumRetryAttempts": spec.rule_max_retry_attempts,
                        "MaximumEventAgeInSeconds": spec.rule_max_event_age_seconds,
                    },
                    "DeadLetterConfig": {"Arn": failed_arn},
                }
            ],
        )
        if answer.get("FailedEntryCount"):
            raise RuntimeError(f"moto refused the rule target: {answer.get('FailedEntries')}")

        self.function_environment = self._function_environment(
            {"IdempotencyTable": table_name, "FailedEventsQueue": self.failed_events_queue_url, "CrmSecret": secret_arn}
        )
        self.outputs = self._create_cloudformation_stack(
            {
                "Stage": spec.stage,
                "EventSource": spec.event_source,
                "EventBusName": spec.bus_name,
                "ConversationEndedRuleName": spec.rule_name,
                "FailedEventsQueueUrl": self.failed_events_queue_url,
                "FailedEventsQueueArn": failed_arn,
                "EndHandlerFunctionName": self.function_name,
                "EndHandlerFunctionArn": self.function_arn,
                # Replay waits longer than this: round an override for tests up to whole seconds.
                "EndHandlerTimeoutSeconds": str(math.ceil(self.function_timeout)),
                "IdempotencyTableName": table_name,
                "CrmSecretArn": secret_arn,
            }
        )
        log.debug("rule %s on bus %s", rule_arn, spec.bus_name)

    def _fresh_queue(self, name: str, attributes: dict[str, str]) -> str:
        """An empty queue with these attributes (one left over in this process is replaced)."""
        sqs = self._clients["sqs"]
        try:
            sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])
        except ClientError as exc:
            if "NonExistentQueue" not in _error_code(exc):
                raise
        url = str(
            sqs.create_queue(QueueName=name, Attributes={**attributes, "SqsManagedSseEnabled": "true"})["QueueUrl"]
        )
        self._teardown.append(("queue", url))
        return url

    def _queue_arn(self, url: str) -> str:
        attributes = self._clients["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attributes["Attributes"]["QueueArn"])

    def _create_cloudformation_stack(self, values: dict[str, str]) -> dict[str, str]:
        """Register the stack in moto so ``describe_stacks`` resolves ``--stack NAME`` as in AWS.

        One cheap real resource (the alarm topic, as in the template); every other output is literal.
        """
        expected = set(self._extras.output_keys)
        known = {*values, "AlarmTopicArn"}
        if expected != known:
            raise RuntimeError(
                "template.yaml's Outputs changed; teach the local stack about "
                f"{sorted(expected - known)} / drop {sorted(known - expected)}"
            )
        template = {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": f"{self._extras.description} (local stack)",
            "Parameters": {name: {"Type": "String"} for name in self.template_parameters},
            "Resources": {
                "AlarmTopic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": self._extras.alarm_topic_name}}
            },
            "Outputs": {
                **{key: {"Value": value} for key, value in values.items()},
                "AlarmTopicArn": {"Value": {"Ref": "AlarmTopic"}},
            },
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

    def _function_environment(self, resources: Mapping[str, str]) -> dict[str, str]:
        """The template's EndHandler environment, with local values for the resources it references."""
        environment: dict[str, str] = {}
        for key, value in self.spec.function_environment.items():
            if isinstance(value, dict):
                ref = str(value.get("Ref"))
                if ref not in resources:
                    raise RuntimeError(
                        f"template.yaml's EndHandler environment {key} refers to {value}, "
                        "which the local stack does not create"
                    )
                value = resources[ref]
            environment[key] = str(value)
        environment["CRM_BASE_URL"] = self.crm.url
        return environment

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
        elif kind == "bus":
            clients["events"].delete_event_bus(Name=name)
        else:
            raise AssertionError(f"unknown resource kind {kind}")

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
            "AFTERCALL_FAKE_CRM_URL": self.crm.url,
        }

    def _worker_env(self, index: int) -> dict[str, str]:
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
            **self.function_environment,
            "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self._extras.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": self._extras.log_group_name,
            "AWS_LAMBDA_LOG_STREAM_NAME": f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]local{index:02d}",
            "AWS_LAMBDA_LOG_FORMAT": "JSON",
            "AWS_LAMBDA_LOG_LEVEL": self._extras.log_level,
            "LAMBDA_TASK_ROOT": str(self._extras.code_dir),
            "_HANDLER": self._extras.handler,
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
        server = _InvokeServer(("127.0.0.1", 0), _InvokeHandler)
        server.stack = self
        self._invoke_server = server
        self.invoke_url = f"http://127.0.0.1:{server.server_address[1]}"
        self._invoke_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"{self.stack_name}-invoke", daemon=True
        )
        self._invoke_thread.start()

    def _start_dispatcher(self) -> None:
        assert self._platform_log is not None
        for index in range(self.workers):
            launch = _Launch(
                command=(
                    sys.executable,
                    "-m",
                    "aftercall_ops.local_worker",
                    "--handler",
                    self._extras.handler,
                    "--end-function",
                    str(self.end_function),
                ),
                env=self._worker_env(index),
                cwd=self._extras.code_dir,
                log_path=self.log_path,
                init_timeout=INIT_TIMEOUT_SECONDS,
            )
            environment = _ExecutionEnvironment(f"env-{index}", launch, self._platform_log)
            self._environments.append(environment)
            thread = threading.Thread(
                target=self._slot_loop, args=(environment,), name=f"{self.stack_name}-slot-{index}", daemon=True
            )
            self._threads.append(thread)
        self._threads.append(threading.Thread(target=self._poll_loop, name=f"{self.stack_name}-poller", daemon=True))
        for thread in self._threads:
            thread.start()

    def _push(self, not_before: float, job: _Job) -> None:
        with self._cond:
            heapq.heappush(self._heap, (not_before, next(self._seq), job))
            self._cond.notify_all()

    def _poll_loop(self) -> None:
        """Long-poll the delivery queue while there is room; keep held messages invisible."""
        sqs = self._clients["sqs"]
        while not self._stopping.is_set():
            self._renew_visibility()
            with self._cond:
                now = time.monotonic()
                backlog = sum(1 for due, _, _ in self._heap if due <= now)
            if backlog >= self.workers:  # every environment has work waiting: let them catch up
                self._stopping.wait(0.05)
                continue
            try:
                answer = sqs.receive_message(
                    QueueUrl=self.delivery_queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
                    VisibilityTimeout=DELIVERY_VISIBILITY_SECONDS,
                    AttributeNames=["SentTimestamp"],
                )
            except (ClientError, BotoCoreError) as exc:
                if not self._stopping.is_set():
                    log.warning("could not read the delivery queue (%s); trying again", exc)
                    self._stopping.wait(0.5)
                continue
            for message in answer.get("Messages", []):
                self._accept(message)

    def _accept(self, message: Mapping[str, Any]) -> None:
        message_id = str(message["MessageId"])
        with self._cond:
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
        with self._cond:
            self._held[message_id] = event
        self._push(time.monotonic(), event)

    def _renew_visibility(self) -> None:
        with self._cond:
            now = time.monotonic()
            due = [
                event for event in self._held.values() if event.invisible_until - now < DELIVERY_VISIBILITY_SECONDS / 2
            ]
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

    def _slot_loop(self, environment: _ExecutionEnvironment) -> None:
        """One unit of concurrency: takes due jobs one at a time and runs them in its environment."""
        while True:
            with self._cond:
                job: _Job | None = None
                while not self._stopping.is_set():
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        job = heapq.heappop(self._heap)[2]
                        self._in_flight += 1
                        break
                    self._cond.wait(min(0.5, self._heap[0][0] - now) if self._heap else 0.5)
                if job is None:
                    return
            try:
                if isinstance(job, _SyncRequest):
                    self._run_sync(job, environment)
                else:
                    self._run_async(job, environment)
            except Exception as exc:
                # A bug of ours must not kill this slot or strand the job: report it, hand the job back.
                log.exception("the local dispatcher failed while running a job; the environment is reset")
                environment.close()
                if isinstance(job, _SyncRequest):
                    if not job.future.done():
                        job.future.set_exception(exc)
                else:
                    self._release(job, delay=5)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()

    def _execute(self, environment: _ExecutionEnvironment, payload: Any, request_id: str) -> InvocationOutcome | None:
        """One attempt; None when the stack is stopping (the attempt was aborted, not failed)."""
        self._count("invocations")
        outcome = environment.invoke(payload, request_id, self.function_arn, self.function_timeout)
        if self._stopping.is_set() and not outcome.ok:
            return None
        if outcome.ok:
            self._count("succeeded")
        else:
            self._count("failed_attempts")
            if outcome.timed_out:
                self._count("timeouts")
        return outcome

    def _run_sync(self, job: _SyncRequest, environment: _ExecutionEnvironment) -> None:
        outcome = self._execute(environment, job.payload, job.request_id)
        if outcome is None:
            job.future.set_exception(RuntimeError("the local stack stopped during the invocation"))
        else:
            job.future.set_result(outcome)

    def _run_async(self, event: _AsyncEvent, environment: _ExecutionEnvironment) -> None:
        age = time.time() - event.sent_ms / 1000
        if age > self.max_event_age:
            log.error("%s: %.0f s old, over MaximumEventAgeInSeconds (%.0f)", event.label, age, self.max_event_age)
            self._give_up(event, "EventAgeExceeded")
            return
        event.attempts += 1
        outcome = self._execute(environment, event.payload, event.request_id)
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
                "%s: attempt %d of %d failed (%s); retrying in %.1f s",
                event.label,
                event.attempts,
                total,
                outcome.error_summary,
                delay,
            )
            self._push(time.monotonic() + delay, event)
        else:
            log.error("%s: attempt %d of %d failed (%s)", event.label, event.attempts, total, outcome.error_summary)
            self._give_up(event, "RetriesExhausted")

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

    def _give_up(self, event: _AsyncEvent, condition: str) -> None:
        """Write the OnFailure record, then (only then) delete the delivery message."""
        record = self.on_failure_record(event, condition)
        try:
            self._clients["sqs"].send_message(QueueUrl=self.failed_events_queue_url, MessageBody=json.dumps(record))
        except (ClientError, BotoCoreError) as exc:
            self._count("dlq_write_failures")
            log.error(
                "%s: could not write the OnFailure record (%s); the event stays in the delivery queue and runs again",
                event.label,
                exc,
            )
            self._release(event, delay=5)
            return
        self._count("sent_to_dlq")
        log.error("%s: sent to the failed-events queue (%s, %d attempts)", event.label, condition, event.attempts)
        self._finish(event)

    def _finish(self, event: _AsyncEvent) -> None:
        try:
            self._clients["sqs"].delete_message(QueueUrl=self.delivery_queue_url, ReceiptHandle=event.receipt_handle)
        except (ClientError, BotoCoreError) as exc:
            log.warning(
                "%s: could not delete the delivery message (%s); it will run again (idempotent)", event.label, exc
            )
        with self._cond:
            self._held.pop(event.message_id, None)

    def _release(self, event: _AsyncEvent, delay: int) -> None:
        with self._cond:
            self._held.pop(event.message_id, None)
        try:
            self._clients["sqs"].change_message_visibility(
                QueueUrl=self.delivery_queue_url, ReceiptHandle=event.receipt_handle, VisibilityTimeout=delay
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning(
                "%s: could not release the delivery message (%s); it reappears after its timeout", event.label, exc
            )

    def _count(self, name: str) -> None:
        with self._cond:
            self._counts[name] += 1

    # --- the public API the CLI and the tests use ------------------------------------------------------

    def invoke(self, payload: Any, timeout: float | None = None) -> InvocationOutcome:
        """A synchronous (RequestResponse) invocation, sharing the environments with async events."""
        if not self._started or self._stopping.is_set():
            raise RuntimeError("the local stack is not running")
        request = _SyncRequest(payload=payload)
        self._push(0.0, request)  # ahead of queued async work: the caller is waiting
        wait = timeout if timeout is not None else INIT_TIMEOUT_SECONDS + self.function_timeout + 10
        try:
            return request.future.result(timeout=wait)
        except FutureTimeoutError:
            raise TimeoutError(f"no environment became free to run the invocation within {wait:.0f} s") from None

    def invoke_async(self, payload: Any) -> str:
        """An ``Event`` invocation: queued like an EventBridge delivery; returns the message id."""
        answer = self._clients["sqs"].send_message(QueueUrl=self.delivery_queue_url, MessageBody=json.dumps(payload))
        return str(answer["MessageId"])

    def is_function(self, name: str, qualifier: str | None = None) -> bool:
        """Whether ``name`` (name, ARN or partial ARN, optionally qualified) is our EndHandler."""
        base = name.split("function:", 1)[1] if "function:" in name else name
        base, _, inline_qualifier = base.partition(":")
        qualifiers = {q for q in (inline_qualifier, qualifier) if q}
        if name.startswith("arn:") and name != self.function_arn and not name.startswith(self.function_arn + ":"):
            return False
        return base == self.function_name and qualifiers <= {"$LATEST"}

    def function_arn_for(self, name: str) -> str:
        if name.startswith("arn:"):
            return name
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name.split('function:')[-1]}"

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
        with self._cond:
            retries = sum(1 for _, _, job in self._heap if isinstance(job, _AsyncEvent) and job.attempts > 0)
            queued = len(self._heap) - retries
            in_flight = self._in_flight
        pending = []
        if in_flight:
            pending.append(f"{in_flight} invocation(s) in flight")
        if retries:
            pending.append(f"{retries} retry(ies) pending")
        if queued:
            pending.append(f"{queued} event(s) waiting for a free environment")
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

    def counts(self) -> dict[str, int]:
        """Invocation counters: invocations, succeeded, failed_attempts, sent_to_dlq, in_flight, and more."""
        with self._cond:
            counts = dict(self._counts)
            counts["in_flight"] = self._in_flight
            counts["retries_pending"] = sum(
                1 for _, _, job in self._heap if isinstance(job, _AsyncEvent) and job.attempts > 0
            )
        counts["cold_starts"] = sum(environment.starts for environment in self._environments)
        return counts

    def worker_pids(self) -> list[int]:
        """Process ids of the execution environments running now (warm ones)."""
        return [pid for pid in (environment.pid for environment in self._environments) if pid is not None]

    def log_records(self) -> list[dict[str, Any]]:
        """Every JSON line in the function's log so far (Powertools, EMF, platform lines)."""
        records = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
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
    url = stack.crm.url
    yield f"# Fake CRM (HubSpot API): {url}  ({len(CUSTOMERS)} contacts from aftercall_ops.generate.CUSTOMERS)"
    yield "#   make every CRM request fail:"
    fault = json.dumps({"kind": "status", "status": 503})
    yield f"#     curl -s -X POST {url}/__admin/faults -H 'Content-Type: application/json' -d '{fault}'"
    yield f"#   back to normal:  curl -s -X DELETE {url}/__admin/faults"
    yield f"#   what it holds:   curl -s {url}/__admin/state"
    yield f"# End function JSON logs: {stack.log_path}"
    yield (
        f"# {stack.workers} environment(s), timeout {stack.function_timeout:g} s, "
        f"{stack.max_retries} retries after {', '.join(f'{d:g}' for d in stack.retry_delays) or '0'} s."
    )
    yield "# Ctrl-C stops it; everything lives in memory and is gone afterwards."


def serve(stack_name: str, parameters: dict[str, str], *, moto_port: int, workers: int | None) -> None:
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
        with LocalStack(stack_name, parameters, workers=workers, moto_port=moto_port) as stack:
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
