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
_session: boto3.session.Session | None = None
_lock = threading.Lock()


def client(service: str) -> Any:
    """A shared, thread-safe client for ``service`` (created once per process, reused warm).

    All clients come from one session: a session loads botocore's endpoint and partition data
    once, so each further client costs only its own service model (docs/performance.md, Cold
    start). Clients are thread-safe;
    sessions are not, which is why they are only touched under the lock.
    """
    global _session
    with _lock:
        if service not in _clients:
            if _session is None:
                _session = boto3.session.Session()
            _clients[service] = _session.client(service, config=_CLIENT_CONFIG)  # type: ignore[call-overload]
        return _clients[service]


def reset_clients() -> None:
    """Forget cached clients and the session (tests that switch endpoints or credentials between stacks)."""
    global _session
    with _lock:
        _clients.clear()
        _session = None
