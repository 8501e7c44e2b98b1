"""The local stack's HTTP servers against malformed requests (issue 11, item 11).

A function URL (and the Lambda Invoke endpoint) got a ``Content-Length`` that is not a number
(``abc``), or negative (``-1``): the first crashed the handler thread and dropped the connection,
the second read until the client gave up. Each must be a 400, and a body that ends before its
``Content-Length`` must not hold a server thread forever.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from aftercall_ops.emulator.stack import LocalStack

BAD_LENGTHS = ["abc", "-1", "+5", "1e3", "0x10", "5, 6", ""]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        f"aftercall-http-{uuid.uuid4().hex[:6]}", workers=1, state_dir=tmp_path_factory.mktemp("local-stack")
    ) as stack:
        yield stack


def _exchange(url: str, request: bytes, timeout: float = 15.0) -> bytes:
    """Send raw bytes to the server behind ``url``; everything it answers until it closes or goes quiet."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return answer
            if not chunk:
                return answer
            answer += chunk
            if b"\r\n\r\n" in answer and answer.split(b"\r\n\r\n", 1)[1]:
                return answer


def _status(answer: bytes) -> int:
    assert answer, "the server closed the connection without an answer"
    return int(answer.split(b" ", 2)[1])


def _post(path: str, length: str, body: bytes = b"{}") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode() + body


@pytest.mark.parametrize("length", BAD_LENGTHS)
def test_a_function_url_answers_400_to_a_content_length_that_is_not_a_number(local: LocalStack, length: str) -> None:
    # Given the ingest function's URL
    url = local.outputs["IngestUrl"]
    # When a request says its body is "abc" (or -1 ...) bytes long
    started = time.monotonic()
    answer = _exchange(url, _post(urlsplit(url).path + "generic", length))
    # Then the answer is a 400 at once, and the connection is closed (where the next request would start is unknown)
    assert _status(answer) == 400
    assert b"connection: close" in answer.lower()
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("length", ["abc", "-1"])
def test_the_invoke_endpoint_answers_400_to_a_content_length_that_is_not_a_number(
    local: LocalStack, length: str
) -> None:
    path = f"/2015-03-31/functions/{local.function_name}/invocations"
    answer = _exchange(local.invoke_url, _post(path, length))
    assert _status(answer) == 400
    assert b"InvalidRequestContentException" in answer


def test_a_body_shorter_than_its_content_length_does_not_hold_the_server(local: LocalStack) -> None:
    # Given a client that announces 100 bytes, sends 2 and waits
    url = local.outputs["IngestUrl"]
    started = time.monotonic()
    answer = _exchange(url, _post(urlsplit(url).path + "generic", "100"), timeout=30)
    # Then the server gives up on it within its client timeout, with a 400
    assert _status(answer) == 400
    assert time.monotonic() - started < 20
    # And it still serves the next request
    assert _status(_exchange(url, _post(urlsplit(url).path + "generic", "2"))) == 401
