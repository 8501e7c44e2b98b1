"""What every loopback fake shares: a real HTTP server with fault injection, a request log, admin.

Why it exists: each CRM adapter is tested against a fake of that CRM's API (HubSpot, Salesforce,
Zendesk, a webhook receiver), and each fake must fail the same ways real services fail. This
module holds that machinery once; a fake subclasses :class:`FakeHttpService` and implements only
its API (``_route``), its credentials (``_authorized``/``_unauthorized``) and its error shapes.

Faults (:mod:`aftercall_ops.fakes.faults`): 5xx, rate limits with ``Retry-After`` (429, or a service's own status
such as Salesforce's 403), hanging past a client's timeout, resetting the connection, applying a
write and then answering 500 (the ambiguous case), added latency, and an answer whose body
trickles in a byte at a time; plus a global rate limit. Which rule a request meets and whether a
token is free are decided in :mod:`aftercall_ops.fakes.fault_plan`; what is kept of each request
in :mod:`aftercall_ops.fakes.request_log`.

Admin endpoints every fake serves (no auth), in :mod:`aftercall_ops.fakes.admin_routes`:
``GET /__admin/state``, ``GET /__admin/requests``, ``GET|POST|DELETE /__admin/faults``,
``POST /__admin/config``, ``POST /__admin/reset``; a fake may add its own routes.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, Self

from aftercall_ops.fakes.admin import FakeAdmin
from aftercall_ops.fakes.admin_routes import admin_answer
from aftercall_ops.fakes.fault_plan import FaultPlan, TokenBucket
from aftercall_ops.fakes.faults import FAULT_KINDS, Fault, FaultKind, path_matches
from aftercall_ops.fakes.request_log import RequestLog
from aftercall_ops.fakes.server import Answer, Drop, Request, RequestRecord, _Handler, _Server

__all__ = [
    "FAULT_KINDS",
    "Answer",
    "Drop",
    "FakeAdmin",
    "FakeHttpService",
    "Fault",
    "FaultKind",
    "Request",
    "RequestRecord",
    "path_matches",
    "serve_until_signalled",
]

# --- the service base class -----------------------------------------------------------------------


class FakeHttpService:
    """A fake API on loopback: lifecycle, faults, rate limit, request log and admin endpoints.

    Subclasses implement :meth:`_route` (the API), :meth:`_authorized` and :meth:`_unauthorized`
    (credentials), and may override the error shapes, :meth:`_admin_route`, :meth:`_state_data`
    and :meth:`_reset_data`. Every accessor returns copies, so tests can inspect state while
    requests are in flight.
    """

    server_name = "FakeHTTP/1.0"
    thread_name = "fake-http"
    #: The status a ``rate_limit`` fault or the global rate limit answers with by default.
    rate_limit_status = 429

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        rate_limit_per_second: float | None = None,
        rate_limit_retry_after: float | None = None,
        log_size: int = 100_000,
    ) -> None:
        self.host = host
        self._port = port
        self._lock = threading.RLock()
        self._faults = FaultPlan(seed)
        self._rate_limit = TokenBucket(rate_limit_per_second, rate_limit_retry_after)
        self._log = RequestLog(log_size)
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind (port 0 picks a free port) and serve on a daemon thread; returns ``self``."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self._port), _Handler)
        server.service = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release hanging requests and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"the {type(self).__name__} is not running: call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL (``http://127.0.0.1:<port>``)."""
        return f"http://{self.host}:{self.port}"

    # --- faults and limits -----------------------------------------------------------------------

    def add_fault(
        self,
        kind: FaultKind,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int | None = None,
        probability: float | None = None,
        status: int | None = None,
        body: Any = None,
        retry_after: str | float | None = "1",
        seconds: float = 30.0,
        then: Literal["answer", "never"] = "answer",
        ms: float = 0.0,
        interval: float = 0.5,
    ) -> Fault:
        """Add a fault rule (see :class:`Fault`); rules are tried in the order they were added."""
        fault = Fault(
            kind=kind,
            method=method,
            path=path,
            times=times,
            probability=probability,
            status=status,
            body=body,
            retry_after=retry_after if retry_after is None or isinstance(retry_after, str) else f"{retry_after:g}",
            seconds=seconds,
            then=then,
            ms=ms,
            interval=interval,
        )
        return self.add_faults([fault])[0]

    def add_faults(self, rules: Iterable[Fault | Mapping[str, Any]]) -> list[Fault]:
        """Add rules given as :class:`Fault` objects or their JSON form."""
        return self._faults.add(rules)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        """Rules still active (exhausted ones are dropped)."""
        return self._faults.rules()

    def set_rate_limit(self, per_second: float | None, retry_after: float | None = None) -> None:
        """Answer rate-limited above ``per_second`` requests (token bucket, one second's burst).

        ``Retry-After`` is the wait until a token is free, rounded up to whole seconds, unless
        ``retry_after`` fixes it (fractions allowed, for benchmarks that cannot wait a second).
        """
        self._rate_limit.configure(per_second, retry_after)

    @property
    def rate_limit_per_second(self) -> float | None:
        """The global rate limit (``None``: none)."""
        return self._rate_limit.per_second

    # --- request log -----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        return self._log.records()

    def requests_to(self, method: str | None = None, path: str | None = None) -> list[RequestRecord]:
        """Logged requests with this method and path (a prefix, or exact when it ends with ``$``)."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper()) and (path is None or path_matches(path, r.path))
        ]

    def request_counts(self) -> dict[str, Any]:
        return self._log.counts()

    def clear_requests(self) -> None:
        self._log.clear()

    def reset(self) -> None:
        """Forget all data, faults and the request log (credentials and the rate limit stay)."""
        self._reset_data()
        self.clear_faults()
        self.clear_requests()

    def state(self) -> dict[str, Any]:
        """Everything ``GET /__admin/state`` returns."""
        return {
            "url": self.url if self._server else None,
            **self._state_data(),
            "requests": self.request_counts(),
            "faults": [f.to_json() for f in self.faults],
            "rate_limit_per_second": self.rate_limit_per_second,
        }

    # --- what a fake implements --------------------------------------------------------------------

    def _route(self, request: Request) -> Answer:
        """Answer an authorized request of the API."""
        raise NotImplementedError

    def _authorized(self, request: Request) -> bool:
        """Whether the request carries valid credentials (checked after faults, before routing)."""
        raise NotImplementedError

    def _unauthorized(self, request: Request) -> Answer:
        """The service's answer to a request without valid credentials."""
        return Answer(401, {"message": "unauthorized"})

    def _rate_limited(self, status: int | None, retry_after: str | None, body: Any) -> Answer:
        """The service's rate-limit answer (``status`` from the fault, if it names one)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return Answer(
            status or self.rate_limit_status, body if body is not None else {"message": "rate limited"}, headers
        )

    def _fault_body(self, fault: Fault) -> Any:
        """The body of an injected ``status``/``after_commit_status`` answer without its own."""
        return {"message": f"injected fault {fault.id}: HTTP {fault.status or 500}"}

    def _admin_error(self, message: str) -> Any:
        """The body of a 400 on the admin endpoints (and of an unreadable request)."""
        return {"message": message}

    def _admin_route(self, method: str, route: str, body: Any) -> Answer | None:
        """A fake's own admin routes (``route`` is the path after ``/__admin/``); ``None``: none."""
        return None

    def _state_data(self) -> dict[str, Any]:
        """The fake's data for ``GET /__admin/state``."""
        return {}

    def _reset_data(self) -> None:
        """Forget the fake's data (for :meth:`reset`)."""

    def _loggable_body(self, request: Request) -> Any:
        """The body as kept in the request log: JSON if it parses, else text."""
        try:
            return request.json()
        except ValueError:
            return request.raw.decode("utf-8", "replace")

    # --- internals ---------------------------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _wait(self, seconds: float) -> None:
        """Sleep, but wake up when the server stops (so ``stop()`` never waits on a hang)."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _serve(self, request: Request) -> Answer:
        record = self._log.received(request, self._loggable_body(request))
        try:
            answer = self._answer(request, record)
        except Drop:
            self._log.answered(record, None)
            raise
        self._log.answered(record, answer.status)
        return answer

    def _answer(self, request: Request, record: RequestRecord) -> Answer:
        latency, fault = self._faults.pick(request.method, request.path)
        record.fault = fault.kind if fault else ("latency" if latency else None)
        self._wait(sum(f.ms for f in latency) / 1000)
        if fault is not None:
            if fault.kind == "hang":
                if fault.then == "never":
                    self._stopping.wait()
                    raise Drop("close")
                self._wait(fault.seconds)
            elif fault.kind == "reset":
                raise Drop("reset")
            elif fault.kind == "status":
                return Answer(fault.status or 500, fault.body if fault.body is not None else self._fault_body(fault))
            elif fault.kind == "rate_limit":
                return self._rate_limited(fault.status, fault.retry_after, fault.body)
        retry_after = self._rate_limit.take()
        if retry_after is not None:
            record.fault = record.fault or "rate_limit_per_second"
            return self._rate_limited(None, retry_after, None)
        record.authorized = self._authorized(request)
        if not record.authorized:
            return self._unauthorized(request)
        answer = self._route(request)
        if fault is not None and fault.kind == "after_commit_status" and 200 <= answer.status < 300:
            return Answer(fault.status or 500, fault.body if fault.body is not None else self._fault_body(fault))
        if fault is not None and fault.kind == "trickle":
            answer.trickle = fault.interval
        return answer

    def _admin(self, request: Request) -> Answer:
        """Answer a ``/__admin/`` request (:mod:`aftercall_ops.fakes.admin_routes`)."""
        return admin_answer(self, request)


def serve_until_signalled(service: FakeHttpService, banner: str) -> int:
    """Run ``service`` until SIGTERM/SIGINT; print its URL first on stdout, ``banner`` on stderr."""
    done = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    service.start()
    print(service.url, flush=True)
    print(banner.format(url=service.url), file=sys.stderr)
    try:
        while not done.wait(0.5):
            pass
    finally:
        service.stop()
    return 0
