"""The wire side of a loopback fake: the threaded HTTP server, its handler, and the request and
answer types a fake's routes deal in (:class:`~aftercall_ops.fakes.http.FakeHttpService` serves them)."""

from __future__ import annotations

import json
import socket
import struct
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from aftercall_ops.fakes.http import FakeHttpService


@dataclass
class RequestRecord:
    """One request a fake received (admin requests are not recorded).

    ``received``/``answered`` are ``time.monotonic()`` readings (comparable within the process,
    e.g. to check that a client waited out a ``Retry-After``); ``time`` is the wall clock.
    ``status`` is ``None`` when no answer was sent (reset, hang forever). ``headers`` holds the
    request's headers (lower-case names) except credentials.
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
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Request:
    """What a fake's routes see: the request line, the raw body and the headers (lower-case)."""

    method: str
    path: str
    query: str
    raw: bytes
    headers: Mapping[str, str]

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def params(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)

    def param(self, name: str) -> str | None:
        values = self.params.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        """The body as JSON (``None`` when empty); :class:`ValueError` when it is not JSON."""
        return json.loads(self.raw) if self.raw else None


@dataclass
class Answer:
    """A response: status, a JSON body (``None``: no body) and extra headers; ``text`` sends a
    plain-text body instead of JSON (a webhook receiver answering ``OK``)."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None
    #: Send the body one byte every this many seconds (the ``trickle`` fault).
    trickle: float | None = None


class Drop(Exception):
    """End the exchange without answering (``reset`` and ``hang`` forever)."""

    def __init__(self, how: Literal["reset", "close"]) -> None:
        super().__init__(how)
        self.how = how


# --- the HTTP server ----------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    #: The stdlib default backlog is 5: concurrent benchmark clients would see SYN retries.
    request_queue_size = 256
    service: FakeHttpService

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (timeout, reset, server stopping) is normal here, not an error."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real APIs: the client's connection pool is exercised
    server: _Server

    def version_string(self) -> str:
        return self.server.service.server_name

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle plus the client's
        # delayed ACK would add ~40 ms to every answer and distort benchmarks.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.service._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.service._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is kept in memory (``FakeHttpService.requests``) instead."""

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
        service = self.server.service
        parts = urlsplit(self.path)
        try:
            raw = self._read_body()
        except ValueError as exc:
            self._send(Answer(400, service._admin_error(str(exc))))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = Request(self.command, parts.path, parts.query, raw, headers)
        try:
            answer = service._admin(request) if parts.path.startswith("/__admin/") else service._serve(request)
        except Drop as drop:
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

    def _send(self, answer: Answer) -> None:
        if answer.text is not None:
            data, content_type = answer.text.encode(), "text/plain;charset=utf-8"
        else:
            data = b"" if answer.body is None else json.dumps(answer.body).encode()
            content_type = "application/json;charset=utf-8"
        self.send_response(answer.status)
        if data:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if data and answer.trickle is not None:
            self.wfile.flush()
            service = self.server.service
            for index in range(len(data)):
                service._wait(answer.trickle)
                if service._stopping.is_set():
                    raise OSError("the server is stopping")  # ends the exchange; handle_error ignores it
                self.wfile.write(data[index : index + 1])
                self.wfile.flush()
        elif data:
            self.wfile.write(data)

    def _drop(self, how: Literal["reset", "close"]) -> None:
        self.close_connection = True
        if how == "reset":
            # Linger 0: close() sends an RST instead of a FIN, as a crashed proxy would.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # drop the makefile reference so close() really closes the socket now
        self.connection.close()
