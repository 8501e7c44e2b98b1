"""The emulator's HTTP servers on loopback: Lambda's ``Invoke`` API (boto3 honours
``AWS_ENDPOINT_URL_LAMBDA``) and each function URL (``FunctionUrlConfig``) on a port of its own.
They reach the functions through :class:`InvokeTarget` (the local stack), never the other way round.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from aftercall_ops.emulator.account import REGION
from aftercall_ops.emulator.runtime import InvocationOutcome

log = logging.getLogger("aftercall_ops.emulator")


SYNC_PAYLOAD_LIMIT = 6 * 1024 * 1024
ASYNC_PAYLOAD_LIMIT = 256 * 1024


class InvokeTarget(Protocol):
    """What the servers need of the stack: find a function, run it (the caller waits) or queue an event."""

    @property
    def function_name(self) -> str: ...

    def function_named(self, name: str, qualifier: str | None = None) -> str | None: ...

    def function_arn_for(self, name: str) -> str: ...

    def invoke(
        self, payload: Any, timeout: float | None = None, *, function: str | None = None
    ) -> InvocationOutcome: ...

    def invoke_async(self, payload: Any) -> str: ...


# --- the Lambda Invoke endpoint -------------------------------------------------------------------

_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")


class _InvokeServer(ThreadingHTTPServer):
    daemon_threads = True
    stack: InvokeTarget
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

    def _invoke_sync(self, stack: InvokeTarget, payload: Any, function: str) -> None:
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


def start_server(
    target: InvokeTarget, label: str, *, function: str = ""
) -> tuple[ThreadingHTTPServer, threading.Thread, str]:
    """A server of ours on a free loopback port, serving in a thread: the Invoke API, or with
    ``function`` that function's URL. Returns the server, its thread and its base URL (ending in ``/``)."""
    server = _InvokeServer(("127.0.0.1", 0), _FunctionUrlHandler if function else _InvokeHandler)
    server.stack = target
    server.function = function
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=label, daemon=True)
    thread.start()
    return server, thread, f"http://127.0.0.1:{server.server_address[1]}/"
