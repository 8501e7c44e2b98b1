"""The template's functions as the local stack runs them: a pool of execution environments each, the
Invoke API and function URL servers in front of them, and what a client may read of them (counters,
process ids, JSON logs). The EndHandler's asynchronous invocations come from :mod:`async_invoke`.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeoutError
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aftercall_ops.emulator.account import function_arn
from aftercall_ops.emulator.http import InvokeTarget, start_server
from aftercall_ops.emulator.pool import FunctionConfig, FunctionPool, Job, SyncRequest
from aftercall_ops.emulator.provisioner import FUNCTION_TYPES
from aftercall_ops.emulator.runtime import INIT_TIMEOUT_SECONDS, ExecutionEnvironment, InvocationOutcome


class FunctionHost:
    """Every function's pool and the HTTP servers; ``function_name`` (the EndHandler) is the default."""

    def __init__(self, stack_name: str, function_name: str, template: dict[str, Any], stopping: threading.Event):
        self.stack_name = stack_name
        self.function_name = function_name
        self._template = template
        self._stopping = stopping
        self.pools: dict[str, FunctionPool] = {}
        #: Each function's JSON log file.
        self.log_paths: dict[str, Path] = {}
        self._servers: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def add(
        self,
        config: FunctionConfig,
        launch_env: dict[str, str],
        run: Callable[[FunctionPool, Job, ExecutionEnvironment], None],
        recover: Callable[[Job, Exception], None],
    ) -> FunctionPool:
        pool = FunctionPool(config, launch_env, self._stopping, run, recover)
        self.pools[config.name] = pool
        self.log_paths[config.name] = config.log_path
        return pool

    def start(self) -> None:
        for pool in self.pools.values():
            pool.start()

    def serve(self, target: InvokeTarget, label: str, function: str = "") -> str:
        """The Invoke API, or ``function``'s URL, on a free loopback port; returns its base URL."""
        server, thread, url = start_server(target, f"{self.stack_name}-{label}", function=function)
        self._servers.append((server, thread))
        return url

    def abort(self) -> None:
        """No new requests from here on; what runs is killed (the stack is stopping)."""
        for server, thread in self._servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        self._servers.clear()
        for pool in self.pools.values():
            pool.abort()

    def join(self) -> None:
        """Wait for the pools; a caller still waiting for a synchronous invocation gets an error."""
        for pool in self.pools.values():
            for job in pool.join():
                if isinstance(job, SyncRequest) and not job.future.done():
                    job.future.set_exception(RuntimeError("the local stack stopped"))
        self.pools.clear()

    def pool(self, function: str | None = None) -> FunctionPool:
        pool = self.pools.get(function or self.function_name)
        if pool is None:
            raise ValueError(f"no function {function!r} in this stack; it has {', '.join(self.pools)}")
        return pool

    def invoke(self, payload: Any, timeout: float | None, function: str | None) -> InvocationOutcome:
        """A synchronous invocation: shares the environments with async events but goes ahead of queued ones."""
        pool = self.pool(function)
        request = SyncRequest(payload=payload)
        pool.push(0.0, request)
        wait = timeout if timeout is not None else INIT_TIMEOUT_SECONDS + pool.config.timeout + 10
        try:
            return request.future.result(timeout=wait)
        except FutureTimeoutError:
            raise TimeoutError(f"no environment became free to run the invocation within {wait:.0f} s") from None

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
        if name.startswith("arn:") and not name.startswith(function_arn(base)):
            return None  # another region or account
        return base if base in self.pools else None

    def pending(self) -> list[str]:
        """What still runs or waits, in words (empty when every pool is idle)."""
        in_flight = retries = queued = 0
        for pool in self.pools.values():
            running, waiting_retries, waiting = pool.backlog()
            in_flight, retries, queued = in_flight + running, retries + waiting_retries, queued + waiting
        pending = []
        if in_flight:
            pending.append(f"{in_flight} invocation(s) in flight")
        if retries:
            pending.append(f"{retries} retry(ies) pending")
        if queued:
            pending.append(f"{queued} invocation(s) waiting for a free environment")
        return pending

    def counts(self, function: str | None = None) -> dict[str, int]:
        """A function's counters: invocations, succeeded, failed_attempts, timeouts, sent_to_dlq,
        in_flight, retries_pending, cold_starts."""
        pool = self.pools.get(function or self.function_name)
        if pool is None:
            return {}
        with pool.cond:
            counts = dict(pool.counts)
        counts["in_flight"], counts["retries_pending"], _ = pool.backlog()
        counts["cold_starts"] = sum(environment.starts for environment in pool.environments)
        return counts

    def worker_pids(self, function: str | None = None) -> list[int]:
        """Process ids of a function's warm execution environments."""
        pool = self.pools.get(function or self.function_name)
        environments = pool.environments if pool is not None else []
        return [pid for pid in (environment.pid for environment in environments) if pid is not None]

    def log_records(self, path: Path) -> list[dict[str, Any]]:
        """Every JSON line in a function's log so far: Powertools, EMF, platform."""
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records
