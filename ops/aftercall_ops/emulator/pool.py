"""One function's environments and the jobs waiting for them: a heap of jobs by the time they may
start (a retry waits out its delay there without holding an environment), a slot thread per
environment. The jobs are Lambda's two invocation types: an async event through all of its attempts,
and a synchronous request whose caller waits.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aftercall_ops.emulator.account import LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY, REGION, function_arn
from aftercall_ops.emulator.runtime import (
    INIT_TIMEOUT_SECONDS,
    ExecutionEnvironment,
    InvocationOutcome,
    Launch,
    PlatformLog,
)
from aftercall_ops.emulator.template import PROJECT_ROOT, LocalResources, Resolver, function_properties

log = logging.getLogger("aftercall_ops.emulator")


# --- jobs -----------------------------------------------------------------------------------------


@dataclass
class AsyncEvent:
    """One event from the delivery queue, through all of its attempts (Lambda's async invocation)."""

    payload: Any
    message_id: str
    receipt_handle: str
    sent_ms: int
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    attempts: int = 0
    last_failure: InvocationOutcome | None = None
    invisible_until: float = 0.0
    #: A retry also waits for the invocations that were running when its attempt failed (see FunctionPool).
    after_invocation: int = -1

    @property
    def label(self) -> str:
        detail = self.payload.get("detail") if isinstance(self.payload, dict) else None
        conversation = detail.get("conversation_id") if isinstance(detail, dict) else None
        return f"conversation {conversation}" if conversation else f"request {self.request_id}"


@dataclass
class SyncRequest:
    """A RequestResponse invocation; its caller waits on ``future``."""

    payload: Any
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    future: Future[InvocationOutcome] = field(default_factory=Future)


Job = AsyncEvent | SyncRequest


@dataclass(frozen=True)
class FunctionConfig:
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


class FunctionPool:
    """A function's environments (one process each, one per unit of concurrency) and its job queue.

    Jobs wait in a heap by the time they may start (a retry waits out its delay there without
    holding an environment); a slot thread per environment takes the next due job.
    """

    def __init__(
        self,
        config: FunctionConfig,
        launch_env: Mapping[str, str],
        stopping: threading.Event,
        run: Callable[[FunctionPool, Job, ExecutionEnvironment], None],
        recover: Callable[[Job, Exception], None],
    ) -> None:
        self.config = config
        self.platform_log = PlatformLog(config.log_path)
        self._stopping = stopping
        self._run = run
        self._recover = recover
        self.cond = threading.Condition()
        self.heap: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self.in_flight = 0
        self._running: set[int] = set()
        self._invocation_ids = itertools.count()
        self.counts = dict.fromkeys(
            ("invocations", "succeeded", "failed_attempts", "timeouts", "sent_to_dlq", "dlq_write_failures"), 0
        )
        command = [sys.executable, "-m", "aftercall_ops.emulator.worker", "--handler", config.handler]
        if config.end_function is not None:
            command += ["--end-function", str(config.end_function)]
        self.environments = [
            ExecutionEnvironment(
                f"{config.name}-{index}",
                Launch(
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

    def push(self, not_before: float, job: Job) -> None:
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

    def join(self) -> list[Job]:
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

    def _slot_loop(self, environment: ExecutionEnvironment) -> None:
        """One unit of concurrency: takes due jobs one at a time and runs them in its environment."""
        while True:
            with self.cond:
                job: Job | None = None
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

    def _take_due(self, now: float) -> Job | None:
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
            if isinstance(job, AsyncEvent) and job.after_invocation >= oldest_running:
                continue
            self.heap.remove(entry)
            heapq.heapify(self.heap)
            return job
        return None

    def backlog(self) -> tuple[int, int, int]:
        """Invocations running, retries waiting out their delay, jobs waiting for a free environment."""
        with self.cond:
            retries = sum(1 for _, _, job in self.heap if isinstance(job, AsyncEvent) and job.attempts)
            return self.in_flight, retries, len(self.heap) - retries

    def newest_running(self) -> int:
        """The newest invocation running now (-1 for none): a retry scheduled now waits for it."""
        with self.cond:
            return max(self._running, default=-1)

    def execute(self, environment: ExecutionEnvironment, payload: Any, request_id: str) -> InvocationOutcome | None:
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


def lambda_environment(config: FunctionConfig, moto_url: str) -> dict[str, str]:
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
        "AWS_ENDPOINT_URL": moto_url,
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


def function_config(
    template: dict[str, Any],
    resolver: Resolver,
    resources: LocalResources,
    logical_id: str,
    name: str,
    log_path: Path,
    *,
    timeout: float | None = None,
    concurrency: int | None = None,
    extra_environment: Mapping[str, str] | None = None,
    end_function: Path | None = None,
) -> FunctionConfig:
    """How the template runs this function, with local values; the keyword arguments override it
    (the EndHandler's workers, timeout, CRM URL and End function)."""
    properties = function_properties(template, logical_id)
    variables = properties.get("Environment", {}).get("Variables", {})
    environment = {
        key: resources.value(resolver.value(value), f"{logical_id}'s environment variable {key}")
        for key, value in variables.items()
    }
    environment.update(extra_environment or {})
    reserved = properties.get("ReservedConcurrentExecutions")
    logging_config = properties.get("LoggingConfig", {})
    log_group = resolver.value(logging_config.get("LogGroup", f"/aws/lambda/{name}"))
    if isinstance(log_group, dict) and log_group.get("Ref") in template["Resources"]:
        log_group = resolver.value(template["Resources"][log_group["Ref"]]["Properties"]["LogGroupName"])
    return FunctionConfig(
        logical_id=logical_id,
        name=name,
        arn=function_arn(name),
        handler=str(properties["Handler"]),
        code_dir=PROJECT_ROOT / str(properties["CodeUri"]),
        timeout=timeout if timeout is not None else float(resolver.value(properties.get("Timeout", 3))),
        memory_mb=int(resolver.value(properties.get("MemorySize", 128))),
        log_level=str(resolver.value(logging_config.get("ApplicationLogLevel", "INFO"))),
        log_group_name=str(log_group),
        environment=environment,
        # Other functions only serve direct invocations and function URLs here: two environments at most.
        concurrency=concurrency if concurrency is not None else min(2, int(resolver.value(reserved or 1))),
        log_path=log_path,
        end_function=end_function,
    )
