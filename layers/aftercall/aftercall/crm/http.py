"""One HTTP client for every CRM adapter: HTTPS only, timeouts always, retries that are safe.

* Connection reuse: one ``requests.Session`` per adapter, kept across warm invocations.
* 429: waits ``Retry-After`` (seconds or HTTP date) when it fits the invocation's budget.
* Pacing: with a :class:`~aftercall.crm.limiter.RateLimiter` (``CrmRateLimitPerSecond``), every
  attempt waits for its slot first, and a 429 pauses the whole environment for ``Retry-After``
  (plus up to a fifth more, so environments do not all resume at once).
* 401: asks the credential source for fresh credentials once (secret rotation), then gives up.
* 5xx, timeouts, resets: retried with backoff for requests that are safe to repeat.

**Unanswered writes** (the protocol, told here; why and its limits: docs/reliability.md,
"Effects"). A create that fails in a way that leaves open whether the CRM applied it raises
:class:`CrmAmbiguousError`: after a 5xx with ``answered_at`` (whatever the CRM applied, it applied
before answering); after no answer at all (timeout, reset after sending, 504) with
``unanswered_at``, the time it was sent, also noted on the call (``CrmCall.unanswered_writes``),
because the CRM may still apply it after we stopped waiting. Then:

1. an adapter whose CRM takes no idempotency key (HubSpot's notes and tickets, new callers'
   contacts) does not send it again blind: it lets the write settle (until the CRM can no longer
   apply it unseen and its search shows it), then looks for it, and creates only if it is not
   there; when that wait does not fit in the invocation, the action fails for a later attempt;
2. the action ledger (:mod:`aftercall.ledger`) records when a failed action's write went
   unanswered (an attempt stopped at its deadline counts that deadline) and hands it to whoever
   performs the action next as ``CrmCall.unanswered_write_at``, who waits for the same moment
   before looking;
3. adapters whose CRM deduplicates (Salesforce's upsert on an external id, Zendesk's and the
   webhook's ``Idempotency-Key``) send it again.

Auth hooks that must call the CRM themselves (Salesforce fetches an OAuth token) read the call
in progress, and so its deadline, from :func:`current_call`.
"""

from __future__ import annotations

import contextvars
import ipaddress
import random
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter, HTTPAdapter

from aftercall.crm.base import CrmCall
from aftercall.crm.limiter import Pacer
from aftercall.errors import (
    ConfigurationError,
    CrmAmbiguousError,
    CrmCredentialsError,
    CrmRequestError,
    CrmUnavailableError,
)
from aftercall.privacy import redact

#: ``auth(force_refresh)`` returns the headers that authenticate a request.
AuthHeaders = Callable[[bool], Mapping[str, str]]

#: Headers computed afresh for every attempt (a webhook signs each attempt with a new timestamp).
AttemptHeaders = Callable[[], Mapping[str, str]]

RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
#: A paced request is not started with less time than this left in the invocation.
MIN_REQUEST_SECONDS = 0.5

_CURRENT_CALL: contextvars.ContextVar[CrmCall | None] = contextvars.ContextVar("aftercall_crm_call", default=None)


def current_call() -> CrmCall | None:
    """The call a :meth:`CrmHttpClient.request` in this thread is serving (``None`` outside one).

    Lets an auth hook that must itself call the CRM (an OAuth token request) keep to the same
    invocation deadline without changing the hook's signature.
    """
    return _CURRENT_CALL.get()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_outbound_url(url: str, *, allow_loopback_http: bool) -> str:
    """Refuse anything but HTTPS, except plain HTTP to loopback when running locally."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url.rstrip("/")
    if parts.scheme == "http" and parts.hostname and allow_loopback_http and is_loopback(parts.hostname):
        return url.rstrip("/")
    raise ConfigurationError(
        f"CRM base URL {url!r} is not allowed: outbound calls use HTTPS"
        + (" (plain HTTP only to loopback in local mode)" if parts.scheme == "http" else "")
    )


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class CrmHttpClient:
    """A JSON-over-HTTPS client with the retry policy above; one per adapter instance."""

    def __init__(
        self,
        crm_name: str,
        base_url: str,
        auth: AuthHeaders,
        *,
        allow_loopback_http: bool = False,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        max_attempts: int = 4,
        backoff_base: float = 0.25,
        backoff_cap: float = 8.0,
        pool_size: int = 16,
        sleep: Callable[[float], None] = time.sleep,
        limiter: Pacer | None = None,
        search_limiter: Pacer | None = None,
        transport: BaseAdapter | None = None,
    ) -> None:
        """``transport``: a requests adapter to send through instead of the network (``aftercall.testing``
        records requests with one)."""
        self.crm_name = crm_name
        self.base_url = check_outbound_url(base_url, allow_loopback_http=allow_loopback_http)
        self._auth = auth
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep
        #: Shared by every client of this execution environment (see aftercall.crm.limiter).
        self.limiter = limiter
        #: The CRM's separate budget for search requests (HubSpot: 4/s per token); searches take both.
        self.search_limiter = search_limiter
        self.session = requests.Session()
        adapter = transport or HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def request(
        self,
        method: str,
        path: str,
        call: CrmCall,
        *,
        json: Any = None,
        data: Mapping[str, str] | bytes | None = None,
        params: Mapping[str, str] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        attempt_headers: AttemptHeaders | None = None,
        safe_to_retry: bool,
        expect_json: bool = True,
        search: bool = False,
    ) -> Any:
        """Send one logical request and return the decoded JSON body (``None`` when empty).

        ``data`` sends a form (a mapping) or exact bytes instead of ``json``; ``attempt_headers``
        is called before every attempt; with ``expect_json=False`` a 2xx body that is not JSON
        is accepted as ``None`` (webhook receivers often answer ``OK``); ``search`` marks a request
        that also counts against the CRM's search limit.
        """
        token = _CURRENT_CALL.set(call)
        try:
            return self._request(
                method,
                path,
                call,
                json=json,
                data=data,
                params=params,
                extra_headers=extra_headers,
                attempt_headers=attempt_headers,
                safe_to_retry=safe_to_retry,
                expect_json=expect_json,
                search=search,
            )
        finally:
            _CURRENT_CALL.reset(token)

    def _request(
        self,
        method: str,
        path: str,
        call: CrmCall,
        *,
        json: Any,
        data: Mapping[str, str] | bytes | None,
        params: Mapping[str, str] | None,
        extra_headers: Mapping[str, str] | None,
        attempt_headers: AttemptHeaders | None,
        safe_to_retry: bool,
        expect_json: bool,
        search: bool,
    ) -> Any:
        url = f"{self.base_url}{path}"
        limiters = tuple(x for x in (self.limiter, self.search_limiter if search else None) if x is not None)
        refreshed = False
        last_problem = "no attempt made"
        attempt = 0
        while attempt < self.max_attempts:
            attempt += 1
            headers = {"Accept": "application/json", **self._auth(False), **(extra_headers or {})}
            if attempt_headers is not None:
                headers.update(attempt_headers())
            remaining = call.deadline.remaining()
            if remaining <= 0.05:
                raise CrmUnavailableError(f"{self.crm_name}: no time left in this invocation for {method} {path}")
            if limiters:
                remaining = self._pace(limiters, call, method, path)
            timeout = (min(self.connect_timeout, remaining), min(self.read_timeout, remaining))
            sent_at = time.time()
            try:
                response = self.session.request(
                    method, url, json=json, data=data, params=params, headers=headers, timeout=timeout
                )
            except requests.exceptions.ConnectTimeout:
                last_problem = "connection timed out"
            except requests.exceptions.ReadTimeout:
                last_problem = f"no answer within {timeout[1]:.1f}s"
                if not safe_to_retry:
                    raise self._unanswered(call, sent_at, f"{method} {path}: {last_problem}") from None
            except requests.exceptions.ConnectionError as exc:
                last_problem = f"connection failed ({type(exc).__name__})"
                if not safe_to_retry and not _never_sent(exc):
                    raise self._unanswered(call, sent_at, f"{method} {path}: {last_problem}") from None
            else:
                status = response.status_code
                self._observe(response, limiters, call)
                if 200 <= status < 300:
                    return _decode(response, expect_json, self.crm_name, method, path)
                if status == 401:
                    if refreshed:
                        raise CrmCredentialsError(
                            f"{self.crm_name} rejected the credentials (401) even after re-reading the secret"
                        )
                    refreshed = True
                    self._auth(True)
                    attempt -= 1  # a rotation is not a failed attempt
                    continue
                if status == 429 or self._is_rate_limit(response):
                    last_problem = f"rate limited ({status})"
                    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                    if retry_after is None:
                        retry_after = self._policy_wait(response)
                    if limiters:
                        self._pause(limiters, attempt, retry_after, call, last_problem)
                    else:
                        self._wait(attempt, retry_after, call, last_problem)
                    continue
                if status in RETRYABLE_STATUS:
                    last_problem = f"HTTP {status}"
                    if not safe_to_retry and status == 504:  # a gateway gave up waiting for the CRM
                        raise self._unanswered(call, sent_at, f"{method} {path}: {last_problem}")
                    if not safe_to_retry:
                        # Answered, but the CRM may have applied the write before failing, and its
                        # search may not show it for a while: treated like an unanswered write.
                        raise self._unanswered(call, sent_at, f"{method} {path}: {last_problem}", time.time())
                else:
                    raise CrmRequestError(
                        f"{self.crm_name} refused {method} {path}: HTTP {status} {_short(response)}",
                        status,
                        _body(response),
                    )
            if attempt < self.max_attempts:
                self._wait(attempt, None, call, last_problem)
        raise CrmUnavailableError(
            f"{self.crm_name}: {method} {path} failed after {self.max_attempts} attempts (last: {last_problem})"
        )

    def _unanswered(
        self, call: CrmCall, sent_at: float, problem: str, answered_at: float | None = None
    ) -> CrmAmbiguousError:
        """A write sent at ``sent_at`` got no clear answer: the CRM may have applied it, or may still.

        Noted on the call, so a later attempt waits for it to settle before looking for it.
        """
        call.unanswered_writes.append(sent_at)
        return CrmAmbiguousError(f"{self.crm_name}: {problem}", unanswered_at=sent_at, answered_at=answered_at)

    def _is_rate_limit(self, response: requests.Response) -> bool:
        """Adapters whose CRM signals rate limits differently (Salesforce 403) override this."""
        return False

    def _policy_wait(self, response: requests.Response) -> float | None:
        """The wait a rate-limit answer without ``Retry-After`` asks for (None: back off).

        Adapters whose CRM says which limit was hit in the body (HubSpot's ``policyName``) override it.
        """
        return None

    def _observe(self, response: requests.Response, limiters: tuple[Pacer, ...], call: CrmCall) -> None:
        """Every answer passes here: adapters whose CRM reports its budget in headers slow down before a 429."""

    def _wait(self, attempt: int, retry_after: float | None, call: CrmCall, problem: str) -> None:
        delay = retry_after if retry_after is not None else self._backoff(attempt)
        if delay + 0.1 >= call.deadline.remaining():
            raise CrmUnavailableError(
                f"{self.crm_name}: {problem}; waiting {delay:.1f}s would outlast this invocation, giving up for a retry"
            )
        self._sleep(delay)

    def _pace(self, limiters: tuple[Pacer, ...], call: CrmCall, method: str, path: str) -> float:
        """Wait for this attempt's slot under each budget it counts in; returns the seconds left afterwards.

        The narrowest budget first (search, then general), and the next slot taken only once the
        previous one has come: a general slot claimed early and used late (behind a search backlog)
        would be wasted and its request would land in another slot's place, and a search held back
        by a general slot reserved far ahead would bunch up with the next searches.
        """
        for limiter in reversed(limiters):
            # A free slot is always taken (as without pacing); a wait only when the request still fits after it.
            slot = limiter.reserve(max(0.0, call.deadline.remaining() - MIN_REQUEST_SECONDS))
            if slot is None:
                raise CrmUnavailableError(
                    f"{self.crm_name}: at the configured CRM rate limit, {method} {path} could not start within "
                    "this invocation, giving up for a retry"
                )
            if slot > 0:
                self._sleep(slot)
        return call.deadline.remaining()

    def _pause(
        self, limiters: tuple[Pacer, ...], attempt: int, retry_after: float | None, call: CrmCall, problem: str
    ) -> None:
        """After a 429: hold every request of this environment for ``Retry-After`` (with jitter)."""
        delay = (retry_after if retry_after is not None else self._backoff(attempt)) * random.uniform(1.0, 1.2)
        for limiter in limiters:
            limiter.pause(delay)
        if delay + MIN_REQUEST_SECONDS >= call.deadline.remaining():
            raise CrmUnavailableError(
                f"{self.crm_name}: {problem}; waiting {delay:.1f}s would outlast this invocation, giving up for a retry"
            )

    def _backoff(self, attempt: int) -> float:
        # Full jitter: spreads retries of many concurrent invocations apart.
        return float(random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))))


def _never_sent(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection was refused or not established, so the CRM never saw the request."""
    text = repr(exc)
    return "NewConnectionError" in text or "Connection refused" in text or "NameResolutionError" in text


def _decode(response: requests.Response, expect_json: bool, crm_name: str, method: str, path: str) -> Any:
    """A 2xx body as JSON (``None`` when empty); one that is not JSON is a refusal unless allowed."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        if not expect_json:
            return None
        raise CrmRequestError(
            f"{crm_name}: {method} {path} answered HTTP {response.status_code} with a body that is not JSON",
            response.status_code,
        ) from None


def _body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _short(response: requests.Response) -> str:
    """The CRM's own error message, trimmed (it may echo request fields, so keep it short).

    Understands HubSpot's ``{"message"}``, Salesforce's ``[{"errorCode", "message"}]`` and
    Zendesk's and OAuth's ``{"error", "description"/"error_description"}``.
    """
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if not isinstance(body, dict):
        return ""
    code = body.get("errorCode") or body.get("error")
    message = body.get("message") or body.get("description") or body.get("error_description")
    if isinstance(code, dict):  # Zendesk nests {"title", "message"} under "error" sometimes
        message = message or code.get("message") or code.get("title")
        code = None
    # CRMs quote rejected values back ("Email jane@example.com is invalid"): mask them, since this
    # text reaches the logs, the action ledger and the failed-events queue.
    text = redact(": ".join(str(part) for part in (code, message) if part))
    return f"({text[:200]})" if text else ""
