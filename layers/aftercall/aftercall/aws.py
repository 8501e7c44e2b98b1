"""The one seam to AWS: every boto3 client the runtime uses comes from here.

boto3 honours ``AWS_ENDPOINT_URL``, so pointing that at the local stack (moto server on
loopback) is all a test or ``aftercall local`` needs; nothing here knows about it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import boto3
from botocore.config import Config

# At DEBUG the SDK logs every request and response body (the CRM secret, events with phone numbers)
# and urllib3 every URL (a Salesforce query holds the caller's number). LogLevel DEBUG in the
# template is for aftercall's own logs: these stay at INFO whatever the function's log level.
for _library in ("boto3", "botocore", "s3transfer", "urllib3"):
    logging.getLogger(_library).setLevel(logging.INFO)

_CLIENT_CONFIG = Config(
    connect_timeout=3,
    read_timeout=10,
    retries={"mode": "standard", "max_attempts": 3},
    max_pool_connections=32,
)
_clients: dict[str, Any] = {}
_lock = threading.Lock()


def client(service: str) -> Any:
    """A shared, thread-safe client for ``service`` (created once per process, reused warm)."""
    with _lock:
        if service not in _clients:
            _clients[service] = boto3.session.Session().client(service, config=_CLIENT_CONFIG)  # type: ignore[call-overload]
        return _clients[service]


def reset_clients() -> None:
    """Forget cached clients (tests that switch endpoints between local stacks)."""
    with _lock:
        _clients.clear()
