"""No leaks: no secret or raw personal data in logs or failure records; HTTPS only; a timeout always.

* Logs: a realistic mix of conversations (valid, invalid, unknown caller, CRM failures, a CRM
  error that quotes the customer back, a secret rotation) runs through the real runtime while
  every line it writes is captured: the runtime's JSON logs, anything else logged at INFO (the
  level the template deploys), and everything printed to stdout/stderr (EMF metrics). None may
  hold a CRM token (old or new), a raw phone number or a raw email address; masked forms are fine.
  The error messages that end up in the failed-events queue are checked the same way.
* HTTPS: :func:`check_outbound_url` refuses anything but HTTPS, except plain HTTP to loopback in
  local mode, and every CRM adapter in ``aftercall.crm`` goes through it.
* Timeouts: against a CRM that accepts the TCP connection and never answers, every adapter's
  call fails with the timeout error instead of hanging.
"""

# ruff: noqa: F811 - the fixtures imported from tests.support are taken as parameters

from __future__ import annotations

import importlib
import inspect
import logging
import math
import pkgutil
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import pytest

import aftercall.crm
from aftercall import aws
from aftercall.credentials import SecretCredentials
from aftercall.crm.base import CrmCall, Customer, SummaryNote
from aftercall.crm.http import CrmHttpClient, check_outbound_url
from aftercall.crm.hubspot import HubSpotCrm
from aftercall.crm.salesforce import SalesforceCrm
from aftercall.crm.webhook import WebhookCrm
from aftercall.crm.zendesk import ZendeskCrm
from aftercall.deadline import Deadline
from aftercall.errors import AftercallError, ConfigurationError, CrmUnavailableError
from aftercall.handler import build_crm
from aftercall.settings import EndHandlerSettings
from end_function import end_function
from tests.support.events import CUSTOMER_EMAIL, CUSTOMER_PHONE, conversation_ended, outbound_call_ended
from tests.support.lambda_context import lambda_context
from tests.support.logs import everything  # noqa: F401 - a fixture, used by name
from tests.support.stack import HandlerPeers, create_secret, unique

NOTE_CREATE = "/crm/v3/objects/notes$"


def _raw_forms(phone: str, email: str) -> list[str]:
    """The ways a raw number or address could appear (JSON escaping does not change these)."""
    return [phone, phone.lstrip("+"), phone[-10:], email, email.split("@")[0]]


# --- the realistic mix ------------------------------------------------------------------------------

STRANGER_PHONE = "+14155559876"
CHAT_EMAIL = "sam.stranger@example.net"


def _run_mix(stack: HandlerPeers) -> tuple[list[dict[str, Any]], list[str]]:
    """Run the mix on one warm runtime; returns the reports and the messages of raised errors."""
    runtime = stack.runtime(unknown_caller_policy="park")  # the unknown callers' errors must not leak either
    reports: list[dict[str, Any]] = []
    raised: list[str] = []

    def handle(event: dict[str, Any]) -> None:
        try:
            reports.append(runtime.handle(event, lambda_context(), end_function))
        except AftercallError as error:  # what Lambda would keep as errorMessage in the OnFailure record
            raised.append(f"{type(error).__name__}: {error}")

    personal_state = {"callback_number": CUSTOMER_PHONE, "email_on_file": CUSTOMER_EMAIL, "last_topic": "billing"}
    # Valid: a support call (note + ticket) and an outbound call (disposition), state holding personal data
    handle(conversation_ended(state={**personal_state, "support_needed": True, "ticket_subject": "Refund"}))
    handle(outbound_call_ended(state={**personal_state, "disposition": "interested"}))
    # Invalid: malformed phone and email (rejected and parked)
    handle(conversation_ended(caller=f"{STRANGER_PHONE} ext 5"))
    handle(conversation_ended(customer_email=CHAT_EMAIL.replace("@", " @ ")))
    # Unknown contact: a caller and a chat customer the CRM does not know
    handle(conversation_ended(caller=STRANGER_PHONE))
    handle(conversation_ended(channel="chat", caller=None, customer_email=CHAT_EMAIL))
    # CRM failures: 500 then success, 429 with Retry-After, and a 400 that quotes the customer back
    stack.crm.add_fault("status", method="POST", path=NOTE_CREATE, status=500, times=1)
    handle(conversation_ended())
    stack.crm.add_fault("rate_limit", method="POST", path=NOTE_CREATE, retry_after="0", times=1)
    handle(conversation_ended())
    stack.crm.add_fault(
        "status",
        method="POST",
        path=NOTE_CREATE,
        status=400,
        times=1,
        body={
            "status": "error",
            "category": "VALIDATION_ERROR",
            "message": f"Property values were not valid: phone {CUSTOMER_PHONE} email {CUSTOMER_EMAIL}",
        },
    )
    handle(conversation_ended())
    # Secret rotation: the CRM stops taking the old token; the new one is read after one 401
    stack.crm.rotate_token(NEW_TOKEN)
    stack.put_secret({"access_token": NEW_TOKEN})
    handle(conversation_ended())
    return reports, raised


NEW_TOKEN = f"pat-na1-rotated-{uuid.uuid4().hex}"


@pytest.mark.parametrize("everything", [logging.INFO, logging.DEBUG], ids=["INFO", "DEBUG"], indirect=True)
def test_a_realistic_mix_logs_no_secret_and_no_raw_phone_or_email(
    stack: HandlerPeers, everything: Callable[[], str]
) -> None:
    # Given the CRM's current token, a mix of conversations with personal data everywhere, and the
    # function's log level at the template's default (INFO) or at LogLevel DEBUG (the AWS SDK
    # logs request and response bodies at DEBUG)
    old_token = stack.crm.token
    # When the mix runs through one warm runtime
    reports, raised = _run_mix(stack)
    output = everything()
    # Then the mix did what it should: processed, rejected, failed (so there was much to log)
    statuses = [r["status"] for r in reports]
    assert statuses.count("processed") >= 4
    assert statuses.count("rejected") == 2
    assert len(raised) == 3  # two unknown contacts, one CRM refusal
    assert output.count('"message":"conversation ended"') >= 8
    # And no line written holds a token, old or new, or a raw number or address
    leaked = [
        value
        for value in [
            old_token,
            NEW_TOKEN,
            *_raw_forms(CUSTOMER_PHONE, CUSTOMER_EMAIL),
            *_raw_forms(STRANGER_PHONE, CHAT_EMAIL),
        ]
        if value in output
    ]
    assert leaked == []
    # While the masked forms are there, so the logs stay useful
    assert "+141****0123" in output
    assert "+141****9876" in output


def test_error_messages_in_the_failed_events_queue_hold_no_raw_phone_or_email(stack: HandlerPeers) -> None:
    # Given the mix has run
    reports, raised = _run_mix(stack)
    # When the parked records are read back, with the errors Lambda would record for the rest
    parked = stack.parked()
    messages = [record["responsePayload"]["errorMessage"] for record in parked] + raised
    # Then each names its reason, with personal data masked or left out
    assert len(parked) == 2
    assert any("+141****9876" in m for m in messages)
    raw = _raw_forms(CUSTOMER_PHONE, CUSTOMER_EMAIL) + _raw_forms(STRANGER_PHONE, CHAT_EMAIL)
    assert [(m, value) for m in messages for value in raw if value in m] == []
    assert all(r.get("error") is None or not any(v in r["error"] for v in raw) for r in reports)


# --- HTTPS only -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "local", "allowed"),
    [
        ("https://api.hubapi.com", False, True),
        ("https://acme.my.salesforce.com/", False, True),
        ("http://api.hubapi.com", False, False),
        ("http://api.hubapi.com", True, False),  # plain HTTP to a real host: never, even locally
        ("http://127.0.0.1:8080", False, False),  # loopback HTTP only in local mode
        ("http://127.0.0.1:8080", True, True),
        ("http://localhost:8080", True, True),
        ("http://[::1]:8080", True, True),
        ("http://127.0.0.1.attacker.example", True, False),
        ("http://localhost.attacker.example", True, False),
        ("http://127.0.0.1@attacker.example", True, False),  # userinfo, not the host
        ("http://10.0.0.5", True, False),
        ("ftp://api.hubapi.com", True, False),
        ("file:///etc/passwd", True, False),
        ("javascript:alert(1)", True, False),
        ("https://", True, False),
        ("api.hubapi.com", True, False),
        ("", True, False),
    ],
)
def test_outbound_urls_are_https_or_loopback_http_in_local_mode(url: str, local: bool, allowed: bool) -> None:
    # Given a CRM base URL, in local mode or not
    # When it is checked
    # Then only HTTPS passes, and plain HTTP only to loopback in local mode
    if allowed:
        assert check_outbound_url(url, allow_loopback_http=local) == url.rstrip("/")
    else:
        with pytest.raises(ConfigurationError, match="not allowed: outbound calls use HTTPS"):
            check_outbound_url(url, allow_loopback_http=local)


#: Every CRM adapter, with a secret it accepts (the URL in it is filled in per test).
ADAPTERS: dict[str, tuple[type[Any], Callable[[str], dict[str, str]]]] = {
    "hubspot": (HubSpotCrm, lambda url: {"access_token": "pat-na1-secret"}),
    "salesforce": (
        SalesforceCrm,
        lambda url: {"client_id": "3MVG9-client", "client_secret": "sf-secret", "instance_url": url},
    ),
    "zendesk": (ZendeskCrm, lambda url: {"subdomain": "acme", "email": "agent@example.com", "api_token": "zd"}),
    "webhook": (WebhookCrm, lambda url: {"url": url, "signing_secret": "whsec-secret"}),
}


def _adapter_classes() -> dict[str, type[Any]]:
    """Every class in the aftercall.crm package that implements the Crm interface, by its name."""
    found: dict[str, type[Any]] = {}
    for module_info in pkgutil.iter_modules(aftercall.crm.__path__):
        module = importlib.import_module(f"aftercall.crm.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            methods = ("log_summary", "open_ticket", "log_disposition")
            name = getattr(cls, "name", None)  # the Crm protocol itself declares it without a value
            if cls.__module__ == module.__name__ and isinstance(name, str) and all(hasattr(cls, m) for m in methods):
                found[name] = cls
    return found


def test_every_crm_adapter_is_covered_here() -> None:
    # Given the adapters in the aftercall.crm package
    # Then each one is in the table the HTTPS and timeout checks below run over
    assert {name: cls for name, cls in _adapter_classes().items()} == {n: c for n, (c, _) in ADAPTERS.items()}


def _credentials(secret: dict[str, str], keys: tuple[str, ...] = ()) -> SecretCredentials:
    return SecretCredentials(create_secret(unique("aftercall/crm"), secret), keys)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
@pytest.mark.parametrize(
    ("url", "local"),
    [("http://crm.example.com", True), ("http://127.0.0.1:9", False)],
    ids=["http-remote", "http-loopback-not-local"],
)
def test_every_crm_adapter_refuses_a_plain_http_base_url(name: str, url: str, local: bool) -> None:
    # Given an adapter configured with a plain-HTTP base URL that is not allowed
    cls, _ = ADAPTERS[name]
    # When it is built
    # Then it refuses at once, before any secret is read or any request is made
    with pytest.raises(ConfigurationError, match="outbound calls use HTTPS"):
        cls(SecretCredentials("aftercall/never-read", ()), url, allow_loopback_http=local)


@pytest.mark.usefixtures("moto_endpoint")
@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("salesforce", {"client_id": "c", "client_secret": "s", "instance_url": "http://acme.my.salesforce.com"}),
        (
            "salesforce",
            {
                "client_id": "c",
                "client_secret": "s",
                "instance_url": "https://acme.my.salesforce.com",
                "login_url": "http://login.salesforce.com",
            },
        ),
        ("webhook", {"url": "http://hooks.example.com/aftercall", "signing_secret": "s"}),
    ],
    ids=["salesforce-instance-url", "salesforce-login-url", "webhook-url"],
)
def test_a_plain_http_url_in_the_crm_secret_is_refused_before_any_request(name: str, secret: dict[str, str]) -> None:
    # Given an adapter whose URL comes from the CRM secret, and the secret names a plain-HTTP URL
    cls, _ = ADAPTERS[name]
    adapter = cls(_credentials(secret), None, allow_loopback_http=True)
    note = SummaryNote("conv-1", Customer(CUSTOMER_PHONE, None), datetime.now(UTC), {"topic": "x"})
    # When it is asked to write
    # Then it refuses with a configuration error naming HTTPS
    with pytest.raises(ConfigurationError, match="outbound calls use HTTPS"):
        adapter.log_summary(note, CrmCall(Deadline.after(10)))


@pytest.mark.parametrize("provider", sorted(ADAPTERS))
def test_the_deployed_runtime_allows_no_plain_http_even_to_loopback(provider: str) -> None:
    # Given the runtime's settings outside local mode with a loopback HTTP base URL
    settings = EndHandlerSettings(
        stage="sandbox",
        idempotency_table="t",
        crm_provider=provider,
        crm_secret_id="aftercall/crm",
        crm_base_url="http://127.0.0.1:8080",
        failed_events_queue_url=None,
        local_mode=False,
    )
    # When the runtime builds its CRM adapter
    # Then it refuses: plain HTTP to loopback is for local mode only
    with pytest.raises(ConfigurationError, match="outbound calls use HTTPS"):
        build_crm(settings)


# --- a timeout on every call ------------------------------------------------------------------------


class SilentCrm:
    """A TCP server on loopback that accepts every connection and never answers (nor closes)."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.05)
        self._stop = threading.Event()
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="silent-crm", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    @property
    def accepted(self) -> int:
        return len(self._connections)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            self._connections.append(connection)  # held open, never read from or written to

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        for connection in self._connections:
            connection.close()
        self._socket.close()


@pytest.fixture
def silent_crm() -> Iterator[SilentCrm]:
    with SilentCrm() as server:
        yield server


#: Short timeouts so the test is quick; the policy (time out, then fail) is the adapters' own.
SHORT_TIMEOUTS = {"connect_timeout": 0.5, "read_timeout": 0.3, "max_attempts": 2, "backoff_base": 0.01}


@pytest.mark.usefixtures("moto_endpoint")
@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_every_crm_adapter_times_out_on_a_crm_that_never_answers(name: str, silent_crm: SilentCrm) -> None:
    # Given an adapter pointed at a CRM that accepts the connection and never answers
    cls, secret = ADAPTERS[name]
    adapter = cls(_credentials(secret(silent_crm.url)), silent_crm.url, allow_loopback_http=True, **SHORT_TIMEOUTS)
    note = SummaryNote("conv-timeout", Customer(CUSTOMER_PHONE, CUSTOMER_EMAIL), datetime.now(UTC), {"topic": "x"})
    # When it writes a call summary with plenty of invocation time left
    # Then the call fails with the CRM-unavailable timeout error (retryable), instead of hanging
    with pytest.raises(CrmUnavailableError, match=r"no answer within 0\.3s"):
        adapter.log_summary(note, CrmCall(Deadline.after(60)))
    assert silent_crm.accepted >= 1


@pytest.mark.usefixtures("moto_endpoint")
def test_with_default_timeouts_a_silent_crm_fails_the_call_within_the_invocation(silent_crm: SilentCrm) -> None:
    # Given the HubSpot adapter with its default timeouts (10 s read), and an invocation with one second left
    adapter = HubSpotCrm(
        _credentials({"access_token": "t"}, ("access_token",)), silent_crm.url, allow_loopback_http=True
    )
    note = SummaryNote("conv-deadline", Customer(CUSTOMER_PHONE, None), datetime.now(UTC), {"topic": "x"})
    # When it writes to a CRM that never answers
    # Then the call gives up with the retryable CRM error when the invocation's time is spent
    with pytest.raises(CrmUnavailableError):
        adapter.log_summary(note, CrmCall(Deadline.after(1.0)))


@pytest.mark.usefixtures("moto_endpoint")
@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_every_crm_adapters_client_has_finite_default_timeouts(name: str) -> None:
    # Given each adapter as the deployed runtime builds it (no base URL override, not local)
    _, secret = ADAPTERS[name]
    settings = EndHandlerSettings(
        stage="live",
        idempotency_table="t",
        crm_provider=name,
        crm_secret_id=create_secret(unique("aftercall/crm"), secret("https://crm.example.com")),
        crm_base_url=None,
        failed_events_queue_url=None,
    )
    adapter: Any = build_crm(settings)
    # When its HTTP client is set up
    client = adapter.http
    # Then both its connect and read timeouts are finite and positive
    assert isinstance(client, CrmHttpClient)
    assert 0 < client.connect_timeout < math.inf
    assert 0 < client.read_timeout < math.inf


@pytest.mark.parametrize("service", ["dynamodb", "sqs", "secretsmanager", "scheduler", "sns"])
def test_every_aws_client_has_finite_timeouts(service: str) -> None:
    # Given the runtime's AWS client for a service it calls
    config = aws.client(service).meta.config
    # Then both its connect and read timeouts are finite
    assert 0 < config.connect_timeout < math.inf
    assert 0 < config.read_timeout < math.inf
