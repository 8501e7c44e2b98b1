"""A fake HubSpot CRM: a real HTTP server on loopback with fault injection.

Why it exists: the runtime's CRM code must be tested against a real protocol peer (sockets,
keep-alive, status codes, headers, timeouts), not against mocks of our own functions. This
server speaks the subset of the HubSpot CRM v3 API that ``aftercall.crm.hubspot`` uses, with
HubSpot's shapes, and can be told to fail in the ways real CRMs fail: 5xx, 429 with
``Retry-After``, hanging past a client's timeout, resetting the connection, applying a write
and then answering 500 (the ambiguous case), added latency, and a global rate limit.

Faults and seed data can be set from Python (:class:`FakeCrm`) or over HTTP through the
unauthenticated ``/__admin/`` endpoints, so another process (the CLI, a demo, the local stack)
can flip them while it runs. ``python -m aftercall_ops.fake_crm --port 0`` runs it standalone
and prints its URL.

Admin endpoints (no auth):

* ``GET /__admin/state``: contacts, notes, tickets, request counts, active faults
* ``GET /__admin/requests``: the request log
* ``POST /__admin/faults`` (a rule or a list of rules), ``GET``/``DELETE /__admin/faults``;
  e.g. ``[{"kind": "status", "status": 503, "method": "POST", "path": "/crm/v3/objects/notes$",
  "times": 2}]`` (a path is a prefix; a trailing ``$`` makes it exact). See :class:`Fault`.
* ``POST /__admin/contacts`` (``{"phone", "email", "properties"}`` or a list): seed contacts
* ``POST /__admin/tokens`` (``{"token": "...", "keep_old": false}``): rotate the access token
* ``POST /__admin/config`` (``{"rate_limit_per_second": 5, "rate_limit_retry_after": 1}``)
* ``POST /__admin/reset``: forget data, faults and the request log
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import math
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, cast, get_args
from urllib.parse import urlsplit

FaultKind = Literal["status", "rate_limit", "hang", "reset", "after_commit_status", "latency"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
OBJECT_TYPES = ("contacts", "notes", "tickets")
SEARCH_OPERATORS = (
    "EQ",
    "NEQ",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "IN",
)
MAX_FILTER_GROUPS = 5
MAX_SEARCH_LIMIT = 200
DEFAULT_TOKEN = "fake-hubspot-token"  # noqa: S105 - the fake's own test token, not a secret

#: HubSpot's answer to a request without valid credentials (wording as the real API's).
UNAUTHORIZED_BODY = {
    "status": "error",
    "message": "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
    "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
    "category": "INVALID_AUTHENTICATION",
}
RATE_LIMIT_BODY = {
    "status": "error",
    "message": "You have reached your secondly limit.",
    "errorType": "RATE_LIMIT",
    "policyName": "SECONDLY",
    "category": "RATE_LIMITS",
}
_OBJECT_PATH = re.compile(r"^/crm/v3/objects/(?P<type>[a-z]+)(?:/(?P<rest>[^/]+))?/?$")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(message: str, category: str = "VALIDATION_ERROR") -> dict[str, Any]:
    return {"status": "error", "message": message, "category": category, "correlationId": str(uuid.uuid4())}


# --- fault rules ------------------------------------------------------------------------------


def path_matches(pattern: str, path: str) -> bool:
    """A path prefix, or an exact path when ``pattern`` ends with ``$``.

    ``/crm/v3/objects/notes`` also matches ``/crm/v3/objects/notes/search``; write
    ``/crm/v3/objects/notes$`` to hit only the create.
    """
    if pattern.endswith("$"):
        return path == pattern[:-1]
    return path.startswith(pattern)


@dataclass
class Fault:
    """One fault rule. It matches requests by ``method`` and ``path`` (both optional; the path
    is a prefix, or exact when it ends with ``$``, see :func:`path_matches`).

    ``times`` bounds how many requests it applies to (``None``: forever); ``probability`` makes
    it apply to a random share of matching requests (drawn from the server's seeded RNG, so a
    run is reproducible). Per kind:

    * ``status``: answer ``status`` (default 500) with ``body`` (default a HubSpot error).
    * ``rate_limit``: answer 429 with ``Retry-After: retry_after`` (omitted when ``None``).
    * ``hang``: wait ``seconds`` then answer normally, or with ``then="never"`` keep the
      connection open without answering until the server stops (exceeds any client timeout).
    * ``reset``: read the request, then close the socket with an RST (``SO_LINGER`` 0).
    * ``after_commit_status``: perform the request (the write is applied), then answer
      ``status`` (default 500): the client cannot tell whether it happened.
    * ``latency``: answer normally after ``ms`` milliseconds. Latency rules stack with the one
      other rule that may apply to the same request.
    """

    kind: FaultKind
    method: str | None = None
    path: str | None = None
    times: int | None = None
    probability: float | None = None
    status: int | None = None
    body: Any = None
    retry_after: str | None = "1"
    seconds: float = 30.0
    then: Literal["answer", "never"] = "answer"
    ms: float = 0.0
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    applied: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {', '.join(FAULT_KINDS)}")
        if self.method is not None:
            self.method = self.method.upper()
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if self.then not in ("answer", "never"):
            raise ValueError("then must be 'answer' or 'never'")
        if self.retry_after is not None and not isinstance(self.retry_after, str):
            self.retry_after = f"{self.retry_after:g}" if isinstance(self.retry_after, float) else str(self.retry_after)
        if self.status is not None and not 100 <= int(self.status) <= 599:
            raise ValueError(f"status {self.status} is not an HTTP status")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        """A rule from its JSON form (the ``/__admin/faults`` body); unknown keys are refused."""
        known = {f for f in cls.__dataclass_fields__ if f not in ("id", "applied")}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        if "kind" not in data:
            raise ValueError("a fault rule needs a 'kind'")
        return cls(**dict(data))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.applied >= self.times

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path is None or path_matches(self.path, path)


@dataclass
class RequestRecord:
    """One request the fake CRM received (admin requests are not recorded).

    ``received``/``answered`` are ``time.monotonic()`` readings (comparable within the process,
    e.g. to check that a client waited out a ``Retry-After``); ``time`` is the wall clock.
    ``status`` is ``None`` when no answer was sent (reset, hang forever).
    """

    method: str
    path: str
    time: float
    received: float
    status: int | None = None
    answered: float | None = None
    fault: str | None = None
    body: Any = None
    authorized: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class _Drop(Exception):
    """Internal: end the exchange without answering (``reset`` and ``hang`` forever)."""

    def __init__(self, how: Literal["reset", "close"]) -> None:
        super().__init__(how)
        self.how = how


# --- the in-memory CRM ------------------------------------------------------------------------


class _Store:
    """HubSpot-shaped objects by type; every public method takes the lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in OBJECT_TYPES}
        self._ids = itertools.count(1001)

    def create(self, kind: str, properties: Mapping[str, Any], associations: Iterable[str] = ()) -> dict[str, Any]:
        with self.lock:
            object_id = str(next(self._ids))
            stamp = _now_iso()
            props = {key: _as_property(value) for key, value in properties.items()}
            props.update({"hs_object_id": object_id, "hs_createdate": stamp, "hs_lastmodifieddate": stamp})
            if kind == "contacts":
                props.setdefault("createdate", stamp)
                props.setdefault("lastmodifieddate", stamp)
            obj = {
                "id": object_id,
                "properties": props,
                "createdAt": stamp,
                "updatedAt": stamp,
                "archived": False,
                "associations": {"contacts": list(associations)},
            }
            self.objects[kind][object_id] = obj
            return copy.deepcopy(obj)

    def update(self, kind: str, object_id: str, properties: Mapping[str, Any]) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects[kind].get(object_id)
            if obj is None:
                return None
            stamp = _now_iso()
            obj["properties"].update({key: _as_property(value) for key, value in properties.items()})
            obj["properties"]["hs_lastmodifieddate"] = stamp
            obj["updatedAt"] = stamp
            return copy.deepcopy(obj)

    def get(self, kind: str, object_id: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects[kind].get(object_id)
            return copy.deepcopy(obj) if obj else None

    def all(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(obj) for obj in self.objects[kind].values()]

    def search(self, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Match under the lock without copying every object (searches stay cheap at volume)."""
        with self.lock:
            return copy.deepcopy(_search(list(self.objects[kind].values()), body))

    def clear(self) -> None:
        with self.lock:
            for objects in self.objects.values():
                objects.clear()


def _as_property(value: Any) -> str:
    """HubSpot stores every property value as a string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"property values must be strings, numbers or booleans, not {type(value).__name__}")


def _filter_matches(obj: Mapping[str, Any], rule: Mapping[str, Any]) -> bool:
    props: Mapping[str, str] = obj["properties"]
    name = rule.get("propertyName")
    operator = rule.get("operator")
    if not isinstance(name, str) or operator not in SEARCH_OPERATORS:
        raise ValueError(f"invalid filter {dict(rule)!r}: needs propertyName and an operator in {SEARCH_OPERATORS}")
    actual = props.get(name, "") if name != "hs_object_id" else obj["id"]
    if operator == "HAS_PROPERTY":
        return actual != ""
    if operator == "NOT_HAS_PROPERTY":
        return actual == ""
    if operator == "IN":
        values = rule.get("values")
        if not isinstance(values, list):
            raise ValueError("operator IN needs a 'values' list")
        return actual.casefold() in {_as_property(v).casefold() for v in values}
    if "value" not in rule:
        raise ValueError(f"operator {operator} needs a 'value'")
    expected = _as_property(rule["value"]).casefold()
    if operator == "EQ":
        return actual != "" and actual.casefold() == expected
    if operator == "NEQ":
        return actual.casefold() != expected
    # CONTAINS_TOKEN: HubSpot tokenises; a case-insensitive substring match is close enough here.
    contained = expected.replace("*", "") in actual.casefold()
    return contained if operator == "CONTAINS_TOKEN" else not contained


def _search(objects: list[dict[str, Any]], body: Mapping[str, Any]) -> dict[str, Any]:
    groups = body.get("filterGroups") or []
    if not isinstance(groups, list) or len(groups) > MAX_FILTER_GROUPS:
        raise ValueError(f"filterGroups must be a list of at most {MAX_FILTER_GROUPS} groups")
    limit = body.get("limit", 10)
    if not isinstance(limit, int) or not 0 < limit <= MAX_SEARCH_LIMIT:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_SEARCH_LIMIT}")
    try:
        after = int(body.get("after") or 0)
    except (TypeError, ValueError):
        raise ValueError("after must be a paging cursor from an earlier answer") from None
    wanted = body.get("properties")

    def matches(obj: dict[str, Any]) -> bool:
        if not groups:
            return True
        # Groups are OR'ed; the filters inside a group are AND'ed (HubSpot's semantics).
        return any(all(_filter_matches(obj, rule) for rule in group.get("filters") or []) for group in groups)

    hits = sorted((obj for obj in objects if matches(obj)), key=lambda o: int(o["id"]))
    page = hits[after : after + limit]
    results = []
    for obj in page:
        props = obj["properties"]
        if isinstance(wanted, list) and wanted:
            props = {k: v for k, v in props.items() if k in wanted or k in ("hs_object_id", "hs_createdate")}
        results.append(
            {
                "id": obj["id"],
                "properties": props,
                "createdAt": obj["createdAt"],
                "updatedAt": obj["updatedAt"],
                "archived": False,
            }
        )
    answer: dict[str, Any] = {"total": len(hits), "results": results}
    if after + limit < len(hits):
        answer["paging"] = {"next": {"after": str(after + limit)}}
    return answer


def _public(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object as HubSpot's API returns it (associations only on request)."""
    return {key: copy.deepcopy(value) for key, value in obj.items() if key != "associations"}


# --- the server ---------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    #: The stdlib default backlog is 5: concurrent benchmark clients would see SYN retries.
    request_queue_size = 256
    crm: FakeCrm

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (timeout, reset, server stopping) is normal here, not an error."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API: the client's connection pool is exercised
    server: _Server
    server_version = "FakeHubSpot/1.0"

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle plus the client's
        # delayed ACK would add ~40 ms to every answer and distort benchmarks.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.crm._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.crm._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is kept in memory (``FakeCrm.requests``) instead."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        crm = self.server.crm
        path = urlsplit(self.path).path
        try:
            raw = self._read_body()
        except ValueError as exc:
            self._send(_Answer(400, _error(str(exc))))
            return
        try:
            if path.startswith("/__admin/"):
                answer = crm._admin(self.command, path, raw)
            else:
                answer = crm._serve(self.command, path, raw, self.headers.get("Authorization"))
        except _Drop as drop:
            self._drop(drop.how)
            return
        self._send(answer)

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        if not length:
            return b""
        try:
            return self.rfile.read(int(length))
        except ValueError:
            raise ValueError("bad Content-Length") from None

    def _send(self, answer: _Answer) -> None:
        data = b"" if answer.body is None else json.dumps(answer.body).encode()
        self.send_response(answer.status)
        if data:
            self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _drop(self, how: Literal["reset", "close"]) -> None:
        self.close_connection = True
        if how == "reset":
            # Linger 0: close() sends an RST instead of a FIN, as a crashed proxy would.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # drop the makefile reference so close() really closes the socket now
        self.connection.close()


class FakeCrm:
    """The fake HubSpot: start it, seed contacts, point ``HubSpotCrm`` at ``url``, add faults.

    Every accessor returns copies, so tests can inspect state while requests are in flight.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = DEFAULT_TOKEN,
        seed: int = 0,
        rate_limit_per_second: float | None = None,
        rate_limit_retry_after: float | None = None,
        log_size: int = 100_000,
    ) -> None:
        self.host = host
        self._port = port
        self._store = _Store()
        self._lock = threading.RLock()
        self._tokens = {token}
        self._token = token
        self._faults: list[Fault] = []
        self._rng = random.Random(seed)
        self._log: deque[RequestRecord] = deque(maxlen=log_size)
        self._counts: Counter[str] = Counter()
        self._status_counts: Counter[str] = Counter()
        self._rate: float | None = None
        self._rate_retry_after: float | None = None
        self._bucket = 0.0
        self._bucket_at = time.monotonic()
        self.set_rate_limit(rate_limit_per_second, rate_limit_retry_after)
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeCrm:
        """Bind (port 0 picks a free port) and serve on a daemon thread; returns ``self``."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self._port), _Handler)
        server.crm = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-crm", daemon=True
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

    def __enter__(self) -> FakeCrm:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake CRM is not running: call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to give the HubSpot adapter (``http://127.0.0.1:<port>``)."""
        return f"http://{self.host}:{self.port}"

    # --- credentials -----------------------------------------------------------------------------

    @property
    def token(self) -> str:
        """The current valid access token."""
        with self._lock:
            return self._token

    def rotate_token(self, new: str, *, keep_old: bool = False) -> None:
        """Make ``new`` the valid token; the old one stops working unless ``keep_old``."""
        with self._lock:
            self._tokens = {*self._tokens, new} if keep_old else {new}
            self._token = new

    # --- data --------------------------------------------------------------------------------------

    def add_contact(
        self, phone: str | None = None, email: str | None = None, properties: Mapping[str, Any] | None = None
    ) -> str:
        """Seed a contact; returns its id."""
        props: dict[str, Any] = dict(properties or {})
        if phone is not None:
            props["phone"] = phone
        if email is not None:
            props["email"] = email
        return str(self._store.create("contacts", props)["id"])

    @property
    def contacts(self) -> list[dict[str, Any]]:
        return self._store.all("contacts")

    @property
    def notes(self) -> list[dict[str, Any]]:
        return self._store.all("notes")

    @property
    def tickets(self) -> list[dict[str, Any]]:
        return self._store.all("tickets")

    def contact(self, contact_id: str) -> dict[str, Any] | None:
        return self._store.get("contacts", contact_id)

    def notes_for(self, conversation_marker: str) -> list[dict[str, Any]]:
        """Notes whose body carries the marker (``aftercall-<conversation id>``)."""
        return [n for n in self.notes if conversation_marker in n["properties"].get("hs_note_body", "")]

    def tickets_for(self, conversation_marker: str) -> list[dict[str, Any]]:
        """Tickets whose content carries the marker."""
        return [t for t in self.tickets if conversation_marker in t["properties"].get("content", "")]

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
        )
        return self.add_faults([fault])[0]

    def add_faults(self, rules: Iterable[Fault | Mapping[str, Any]]) -> list[Fault]:
        """Add rules given as :class:`Fault` objects or their JSON form."""
        faults = [rule if isinstance(rule, Fault) else Fault.from_json(rule) for rule in rules]
        with self._lock:
            self._faults.extend(faults)
        return faults

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        """Rules still active (exhausted ones are dropped)."""
        with self._lock:
            return [copy.copy(f) for f in self._faults]

    def set_rate_limit(self, per_second: float | None, retry_after: float | None = None) -> None:
        """Answer 429 above ``per_second`` requests (token bucket, burst of one second's worth).

        ``Retry-After`` is the wait until a token is free, rounded up to whole seconds, unless
        ``retry_after`` fixes it (fractions allowed, for benchmarks that cannot wait a second).
        """
        if per_second is not None and per_second <= 0:
            raise ValueError("rate_limit_per_second must be positive (or None for no limit)")
        with self._lock:
            self._rate = per_second
            self._rate_retry_after = retry_after
            self._bucket = max(1.0, per_second or 0.0)
            self._bucket_at = time.monotonic()

    # --- request log -----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return [copy.copy(r) for r in self._log]

    def requests_to(self, method: str | None = None, path: str | None = None) -> list[RequestRecord]:
        """Logged requests with this method and path (a prefix, or exact when it ends with ``$``)."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper()) and (path is None or path_matches(path, r.path))
        ]

    def request_counts(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": sum(self._counts.values()),
                "by_route": dict(self._counts),
                "by_status": dict(self._status_counts),
            }

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()
            self._counts.clear()
            self._status_counts.clear()

    def reset(self) -> None:
        """Forget all data, faults and the request log (the token and rate limit stay)."""
        self._store.clear()
        self.clear_faults()
        self.clear_requests()

    def state(self) -> dict[str, Any]:
        """Everything ``GET /__admin/state`` returns."""
        return {
            "url": self.url if self._server else None,
            "contacts": self.contacts,
            "notes": self.notes,
            "tickets": self.tickets,
            "requests": self.request_counts(),
            "faults": [f.to_json() for f in self.faults],
            "rate_limit_per_second": self._rate,
        }

    # --- internals ---------------------------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _pick_faults(self, method: str, path: str) -> tuple[list[Fault], Fault | None]:
        """The latency rules and the first other rule that apply to this request (consumed)."""
        latency: list[Fault] = []
        chosen: Fault | None = None
        with self._lock:
            for fault in self._faults:
                if fault.exhausted or not fault.matches(method, path):
                    continue
                if fault.kind != "latency" and chosen is not None:
                    continue
                if fault.probability is not None and self._rng.random() >= fault.probability:
                    continue
                fault.applied += 1
                if fault.kind == "latency":
                    latency.append(fault)
                else:
                    chosen = fault
            self._faults = [f for f in self._faults if not f.exhausted]
        return latency, chosen

    def _take_token(self) -> float | None:
        """None when the request may pass the rate limit, else the seconds until it could."""
        with self._lock:
            if self._rate is None:
                return None
            now = time.monotonic()
            capacity = max(1.0, self._rate)
            self._bucket = min(capacity, self._bucket + (now - self._bucket_at) * self._rate)
            self._bucket_at = now
            if self._bucket >= 1.0:
                self._bucket -= 1.0
                return None
            return (1.0 - self._bucket) / self._rate

    def _wait(self, seconds: float) -> None:
        """Sleep, but wake up when the server stops (so ``stop()`` never waits on a hang)."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _serve(self, method: str, path: str, raw: bytes, authorization: str | None) -> _Answer:
        record = RequestRecord(method=method, path=path, time=time.time(), received=time.monotonic())
        try:
            record.body = json.loads(raw) if raw else None
        except ValueError:
            record.body = raw.decode("utf-8", "replace")
        with self._lock:
            self._log.append(record)
            self._counts[f"{method} {path}"] += 1
        try:
            answer = self._answer(method, path, record, authorization)
        except _Drop:
            with self._lock:
                record.answered = time.monotonic()
            raise
        with self._lock:
            record.status = answer.status
            record.answered = time.monotonic()
            self._status_counts[str(answer.status)] += 1
        return answer

    def _answer(self, method: str, path: str, record: RequestRecord, authorization: str | None) -> _Answer:
        latency, fault = self._pick_faults(method, path)
        record.fault = fault.kind if fault else ("latency" if latency else None)
        self._wait(sum(f.ms for f in latency) / 1000)
        if fault is not None:
            if fault.kind == "hang":
                if fault.then == "never":
                    self._stopping.wait()
                    raise _Drop("close")
                self._wait(fault.seconds)
            elif fault.kind == "reset":
                raise _Drop("reset")
            elif fault.kind == "status":
                return _Answer(fault.status or 500, fault.body if fault.body is not None else _server_error(fault))
            elif fault.kind == "rate_limit":
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                return _Answer(429, fault.body if fault.body is not None else RATE_LIMIT_BODY, headers)
        wait = self._take_token()
        if wait is not None:
            retry_after = self._rate_retry_after
            value = f"{retry_after:g}" if retry_after is not None else str(max(1, math.ceil(wait)))
            record.fault = record.fault or "rate_limit_per_second"
            return _Answer(429, RATE_LIMIT_BODY, {"Retry-After": value})
        record.authorized = self._authorized(authorization)
        if not record.authorized:
            return _Answer(401, {**UNAUTHORIZED_BODY, "correlationId": str(uuid.uuid4())})
        answer = self._route(method, path, record.body)
        if fault is not None and fault.kind == "after_commit_status" and 200 <= answer.status < 300:
            return _Answer(fault.status or 500, fault.body if fault.body is not None else _server_error(fault))
        return answer

    def _authorized(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        with self._lock:
            return authorization[len("Bearer ") :].strip() in self._tokens

    def _route(self, method: str, path: str, body: Any) -> _Answer:
        match = _OBJECT_PATH.match(path)
        if match is None or match["type"] not in OBJECT_TYPES:
            return _Answer(404, _error(f"no route for {method} {path}", "OBJECT_NOT_FOUND"))
        kind, rest = match["type"], match["rest"]
        try:
            if method == "POST" and rest is None:
                return self._create(kind, body)
            if method == "POST" and rest == "search":
                if not isinstance(body, dict):
                    raise ValueError("the search body must be a JSON object")
                return _Answer(200, self._store.search(kind, body))
            if rest is not None and rest != "search" and method in ("GET", "PATCH"):
                return self._one(kind, rest, method, body)
        except ValueError as exc:
            return _Answer(400, _error(str(exc)))
        return _Answer(405, _error(f"{method} is not supported on {path}", "METHOD_NOT_ALLOWED"))

    def _create(self, kind: str, body: Any) -> _Answer:
        if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
            raise ValueError("the body must be a JSON object with a 'properties' object")
        props: dict[str, Any] = body["properties"]
        missing = {"notes": ("hs_timestamp",), "tickets": ("subject", "hs_pipeline_stage")}.get(kind, ())
        absent = [name for name in missing if props.get(name) in (None, "")]
        if absent:
            raise ValueError(f"missing required properties for {kind}: {', '.join(absent)}")
        associations = body.get("associations") or []
        if not isinstance(associations, list):
            raise ValueError("associations must be a list")
        targets = []
        for association in associations:
            to = association.get("to") if isinstance(association, dict) else None
            target = str(to.get("id", "")) if isinstance(to, dict) else ""
            valid = isinstance(association, dict) and bool(association.get("types"))
            if not valid or self._store.get("contacts", target) is None:
                raise ValueError(f"One or more associations are invalid (to.id {target!r})")
            targets.append(target)
        obj = self._store.create(kind, props, targets)
        return _Answer(201, _public(obj))

    def _one(self, kind: str, object_id: str, method: str, body: Any) -> _Answer:
        if method == "GET":
            obj = self._store.get(kind, object_id)
        else:
            if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
                raise ValueError("the body must be a JSON object with a 'properties' object")
            obj = self._store.update(kind, object_id, body["properties"])
        if obj is None:
            return _Answer(404, _error("resource not found", "OBJECT_NOT_FOUND"))
        return _Answer(200, _public(obj))

    def _admin(self, method: str, path: str, raw: bytes) -> _Answer:
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            return _Answer(400, _error("the body is not JSON"))
        route = path.rstrip("/").removeprefix("/__admin/")
        try:
            if route == "state" and method == "GET":
                return _Answer(200, self.state())
            if route == "requests" and method == "GET":
                return _Answer(200, [r.to_json() for r in self.requests])
            if route == "faults":
                if method == "GET":
                    return _Answer(200, [f.to_json() for f in self.faults])
                if method == "DELETE":
                    self.clear_faults()
                    return _Answer(204, None)
                if method == "POST":
                    rules = body if isinstance(body, list) else [body]
                    if not all(isinstance(rule, dict) for rule in rules):
                        raise ValueError("send a fault rule object or a list of them")
                    added = self.add_faults(rules)
                    return _Answer(201, [f.to_json() for f in added])
            if route == "contacts" and method == "POST":
                items = body if isinstance(body, list) else [body]
                ids = []
                for item in items:
                    if not isinstance(item, dict):
                        raise ValueError("send a contact object or a list of them")
                    ids.append(self.add_contact(item.get("phone"), item.get("email"), item.get("properties")))
                return _Answer(201, {"ids": ids})
            if route == "tokens" and method == "POST":
                if not isinstance(body, dict) or not isinstance(body.get("token"), str) or not body["token"]:
                    raise ValueError('send {"token": "<new token>", "keep_old": false}')
                self.rotate_token(body["token"], keep_old=bool(body.get("keep_old")))
                return _Answer(200, {"rotated": True})
            if route == "config" and method == "POST":
                if not isinstance(body, dict):
                    raise ValueError('send {"rate_limit_per_second": <number or null>}')
                self.set_rate_limit(body.get("rate_limit_per_second"), body.get("rate_limit_retry_after"))
                return _Answer(200, {"rate_limit_per_second": self._rate})
            if route == "reset" and method == "POST":
                self.reset()
                return _Answer(204, None)
        except (TypeError, ValueError) as exc:
            return _Answer(400, _error(str(exc)))
        return _Answer(404, _error(f"no admin route {method} {path}", "OBJECT_NOT_FOUND"))


def _server_error(fault: Fault) -> dict[str, Any]:
    return _error(f"injected fault {fault.id}: HTTP {fault.status or 500}", "INTERNAL_ERROR")


# --- a client for the admin endpoints (for other processes) --------------------------------------


class FakeCrmAdmin:
    """Drive a running fake CRM from another process (CLI, demo) through ``/__admin/``."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not a fake CRM URL: {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, route: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            f"{self.url}/__admin/{route}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - scheme checked
            payload = response.read()
        return json.loads(payload) if payload else None

    def state(self) -> dict[str, Any]:
        return cast("dict[str, Any]", self._call("GET", "state"))

    def requests(self) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", self._call("GET", "requests"))

    def add_faults(self, rules: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", self._call("POST", "faults", list(rules)))

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def add_contact(
        self, phone: str | None = None, email: str | None = None, properties: Mapping[str, Any] | None = None
    ) -> str:
        answer = self._call("POST", "contacts", {"phone": phone, "email": email, "properties": dict(properties or {})})
        return str(answer["ids"][0])

    def rotate_token(self, token: str, *, keep_old: bool = False) -> None:
        self._call("POST", "tokens", {"token": token, "keep_old": keep_old})

    def set_rate_limit(self, per_second: float | None, retry_after: float | None = None) -> None:
        self._call("POST", "config", {"rate_limit_per_second": per_second, "rate_limit_retry_after": retry_after})

    def reset(self) -> None:
        self._call("POST", "reset")


# --- standalone ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake CRM until interrupted; prints its URL as the first line on stdout."""
    parser = argparse.ArgumentParser(
        prog="python -m aftercall_ops.fake_crm", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="port (0 picks a free one)")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the valid access token")
    parser.add_argument("--seed", type=int, default=0, help="seed for probabilistic faults")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests per second before 429")
    parser.add_argument(
        "--contact", action="append", default=[], metavar="PHONE[,EMAIL]", help="seed a contact (repeatable)"
    )
    args = parser.parse_args(argv)
    crm = FakeCrm(
        host=args.host,
        port=args.port,
        token=args.token,
        seed=args.seed,
        rate_limit_per_second=args.rate_limit,
    )
    for spec in args.contact:
        phone, _, email = spec.partition(",")
        crm.add_contact(phone=phone or None, email=email or None)
    done = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    crm.start()
    print(crm.url, flush=True)
    print(
        f"fake HubSpot CRM on {crm.url} (token {args.token!r}); admin at {crm.url}/__admin/state",
        file=sys.stderr,
    )
    try:
        while not done.wait(0.5):
            pass
    finally:
        crm.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
