"""The local stack: the whole aftercall pipeline on loopback, with no AWS account and no Docker.

Why it exists: the handler, the CLI and the tests must run against the same shapes as in AWS
(EventBridge envelope, Lambda's async retries, the ``OnFailure`` record, stack outputs) without
an account. Everything is taken from ``template.yaml`` through :func:`stack_spec`, so local and
cloud cannot drift apart:

* moto in server mode on 127.0.0.1 holds the template's resources that have a local use (bus,
  queues, table, secrets, topics, schedule group), the rule with the template's pattern, and a
  CloudFormation stack whose outputs are the template's Outputs resolved to the local values, so
  ``--stack NAME`` resolves as in AWS;
* moto cannot run Lambda, so the rule targets an SQS "delivery" queue (with an input transformer
  that delivers the whole event, ``account`` included), and a dispatcher gives the real
  ``functions/end_handler/app.py`` Lambda's async semantics: one process per unit of reserved
  concurrency, retries with delays, timeouts that kill the process, then an ``OnFailure`` record
  in the failed-events queue in the exact AWS shape;
* a fake HubSpot (:class:`FakeCrm`) seeded with :data:`aftercall_ops.generate.CUSTOMERS`;
* a Lambda ``Invoke`` endpoint for ``aftercall replay --mode invoke`` (boto3 honours
  ``AWS_ENDPOINT_URL_LAMBDA``) that runs any of the template's functions, and each function URL
  (``FunctionUrlConfig``) served on a loopback port of its own.

Not emulated: rules of other functions (EventBridge Scheduler never fires in moto, the Connect
rule has no source locally); invoke those functions directly instead.

``aftercall local`` runs it in a terminal until Ctrl-C. This module is the facade; each concern
lives in a module of its own: :mod:`provisioner` (resources, outputs), :mod:`runtime` and
:mod:`pool` (execution environments), :mod:`async_invoke` (poll, retries, max age, OnFailure),
:mod:`http` (Invoke API, function URLs), :mod:`template` (load, resolve).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from aftercall.crm.http import check_outbound_url
from aftercall.errors import ConfigurationError
from aftercall_ops.emulator.account import client_environment, function_arn, local_client
from aftercall_ops.emulator.async_invoke import AsyncInvoker
from aftercall_ops.emulator.functions import FunctionHost
from aftercall_ops.emulator.pool import FunctionConfig, function_config, lambda_environment
from aftercall_ops.emulator.provisioner import END_HANDLER, FUNCTION_TYPES, FUNCTION_URL_TYPE, Provisioner
from aftercall_ops.emulator.runtime import INIT_TIMEOUT_SECONDS, InvocationOutcome
from aftercall_ops.emulator.template import PROJECT_ROOT, Resolver, StackSpec, load_template, stack_spec
from aftercall_ops.fakes.hubspot import FakeCrm
from aftercall_ops.generate import CUSTOMERS

log = logging.getLogger("aftercall_ops.emulator")

DEFAULT_STACK_NAME = "aftercall-local"
DEFAULT_PARAMETERS: Mapping[str, str] = {"Stage": "sandbox"}
#: Real Lambda waits about 1 then 2 minutes between async retries; locally that would only slow us down.
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0.2, 0.4)


def _external_crm_url(url: str) -> str:
    """The CRM endpoint the local stack may use: HTTPS, or plain HTTP to loopback only."""
    try:
        return check_outbound_url(url, allow_loopback_http=True)
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None


# --- the stack --------------------------------------------------------------------------------------


def _refuse_real_crm(parameters: Mapping[str, str]) -> None:
    for name in ("CrmSecretArn", "CrmBaseUrl"):
        if parameters.get(name):
            raise ValueError(
                f"parameter {name} points at a real CRM; the local stack uses its fake CRM and a secret of "
                "its own, or the CRM you name with crm_url (aftercall local --crm-url), so leave it empty"
            )


def _start_with_directory(crm: FakeCrm) -> None:
    """The fake HubSpot, with the generator's customers as people typed their numbers."""
    crm.start()
    for customer in CUSTOMERS:
        first, _, last = customer.name.partition(" ")
        crm.add_contact(
            phone=customer.typed_phone,  # as people typed them: HubSpot keeps the format
            email=customer.email,
            properties={"firstname": first, "lastname": last},
        )


def _state_dir(requested: Path | None, stack_name: str) -> Path:
    if requested is None:
        return Path(tempfile.mkdtemp(prefix=f"aftercall-local-{stack_name}-"))
    requested.mkdir(parents=True, exist_ok=True)
    return requested


def _log_path(state_dir: Path, logical_id: str) -> Path:
    name = "end-handler" if logical_id == END_HANDLER else re.sub(r"(?<!^)(?=[A-Z])", "-", logical_id).lower()
    return state_dir / f"{name}.log"


class LocalStack:
    """The aftercall stack on loopback: moto, the fake CRM, the dispatcher and the Invoke endpoint.

    Use as a context manager (or ``start()``/``stop()``). ``env`` is what a client process needs
    to talk to it, ``outputs`` are the stack outputs as ``describe_stacks`` returns them.
    ``workers``, ``function_timeout``, ``end_function`` and ``end_handler_environment`` (extra
    variables, e.g. ``CRM_READ_TIMEOUT_SECONDS`` for runs that need short CRM timeouts) apply to the
    EndHandler; every other function of the template can be invoked synchronously through the
    Invoke endpoint. ``crm_seed`` seeds the fake CRM's probabilistic faults.
    """

    def __init__(
        self,
        stack_name: str = DEFAULT_STACK_NAME,
        parameters: dict[str, str] | None = None,
        *,
        workers: int | None = None,
        function_timeout: float | None = None,
        retry_delays: tuple[float, ...] | None = None,
        end_function: str | None = None,
        state_dir: Path | None = None,
        moto_port: int = 0,
        max_event_age: float | None = None,
        end_handler_environment: Mapping[str, str] | None = None,
        crm_seed: int = 0,
        crm_url: str | None = None,
        crm_secret: Mapping[str, str] | None = None,
        moto_server: Callable[..., Any] | None = None,
    ) -> None:
        self.stack_name = stack_name
        self.parameters = {**DEFAULT_PARAMETERS, **(parameters or {})}
        _refuse_real_crm(self.parameters)
        #: Another CRM endpoint instead of the fake (a CRM sandbox, a fake of your own), and its secret.
        self.external_crm_url = _external_crm_url(crm_url) if crm_url else None
        self.external_crm_secret = dict(crm_secret or {})
        self._template = load_template()
        self.spec: StackSpec = stack_spec(stack_name, self.parameters, self._template)
        self._resolver = resolver = Resolver(self._template, self.parameters, stack_name)
        self.workers = self.spec.reserved_concurrency if workers is None else workers
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        self.function_timeout = float(
            self.spec.function_timeout_seconds if function_timeout is None else function_timeout
        )
        if self.function_timeout <= 0:
            raise ValueError("function_timeout must be positive")
        self._timeout_overridden = function_timeout is not None
        self.retry_delays = DEFAULT_RETRY_DELAYS if retry_delays is None else tuple(retry_delays)
        if any(delay < 0 for delay in self.retry_delays):
            raise ValueError("retry delays must not be negative")
        self.max_retries = self.spec.function_max_retry_attempts
        self.max_event_age = float(self.spec.function_max_event_age_seconds if max_event_age is None else max_event_age)
        end_handler = self._template["Resources"][END_HANDLER]["Properties"]
        default_end_function = PROJECT_ROOT / str(end_handler["CodeUri"]) / "end_function.py"
        self.end_function = Path(end_function or default_end_function).resolve()
        if not self.end_function.is_file():
            raise FileNotFoundError(f"end_function module not found: {self.end_function}")
        self._provisioner = Provisioner(
            stack_name,
            self._template,
            resolver,
            self.spec,
            moto_port=moto_port,
            workers=self.workers,
            crm_secret=self._crm_secret,
            moto_server=moto_server,
        )
        #: Every template parameter with the value this stack uses (defaults filled in).
        self.template_parameters = self._provisioner.template_parameters
        self._planned = self._provisioner.plan_resources()
        self.function_name = next(p.name for p in self._planned if p.logical_id == END_HANDLER)
        self.function_arn = function_arn(self.function_name)
        self.delivery_queue_name = f"{stack_name}-delivery"
        self._requested_state_dir = state_dir

        self.state_dir = Path()
        self.log_path = Path()
        self.env: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        self.end_handler_environment = dict(end_handler_environment or {})
        self.crm = FakeCrm(seed=crm_seed)
        self.moto_url = ""
        self.invoke_url = ""
        self.delivery_queue_url = ""
        self.failed_events_queue_url = ""
        self.function_environment: dict[str, str] = {}

        self._started = False
        self._stopping = threading.Event()
        self._functions = FunctionHost(stack_name, self.function_name, self._template, self._stopping)
        #: Each function's JSON log file (``log_path`` is the EndHandler's).
        self.log_paths = self._functions.log_paths
        self._async: AsyncInvoker | None = None
        #: Function URLs, by function name (the IngestFunction's, for vendor webhooks).
        self.function_urls: dict[str, str] = {}

    # --- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def crm_url(self) -> str:
        """Where the End function sends its CRM requests: the fake CRM, or ``crm_url``."""
        return self.external_crm_url or self.crm.url

    def start(self) -> LocalStack:
        """Start moto, the fake CRM, create the resources, then the dispatcher; returns ``self``."""
        if self._started:
            return self
        self._started = True
        self._stopping.clear()
        try:
            self._provisioner.claim_names(self._planned)
            self.state_dir = _state_dir(self._requested_state_dir, self.stack_name)
            self.log_path = _log_path(self.state_dir, END_HANDLER)
            self.log_path.touch()
            provisioner = self._provisioner
            provisioner.start_moto()
            self.moto_url = provisioner.moto_url
            if self.external_crm_url is None:
                _start_with_directory(self.crm)
            provisioner.create_resources(self._planned, self.delivery_queue_name)
            self.delivery_queue_url = provisioner.delivery_queue_url
            self.failed_events_queue_url = provisioner.failed_events_queue_url
            provisioner.create_rule()
            invoker = self._start_functions()
            self.outputs = provisioner.create_cloudformation_stack(
                self.function_timeout if self._timeout_overridden else None
            )
            self.invoke_url = self._functions.serve(self, "invoke").rstrip("/")
            self.env = {
                **client_environment(self.moto_url, self.invoke_url),
                "AFTERCALL_STACK": self.stack_name,
                "AFTERCALL_FAKE_CRM_URL": self.crm_url,
            }
            invoker.start(self._functions.pool())
        except BaseException:
            self.stop()
            raise
        log.info("local stack %s is up: moto %s, CRM %s", self.stack_name, self.moto_url, self.crm_url)
        return self

    def stop(self) -> None:
        """Stop everything this stack started, in order; safe to call more than once."""
        if not self._started:
            return
        self._stopping.set()
        self._functions.abort()
        if self._async is not None:
            self._async.stop()
        self._functions.join()
        self._async = None
        self._provisioner.delete_resources()
        self.crm.stop()
        self._provisioner.stop_moto()
        self._provisioner.release_names()
        self._started = False

    def _function_config(self, logical_id: str, name: str) -> FunctionConfig:
        """How the template runs this function; the EndHandler with this stack's overrides."""
        log_path = _log_path(self.state_dir, logical_id)
        if logical_id != END_HANDLER:
            return function_config(
                self._template, self._resolver, self._provisioner.resources, logical_id, name, log_path
            )
        return function_config(
            self._template,
            self._resolver,
            self._provisioner.resources,
            logical_id,
            name,
            log_path,
            timeout=self.function_timeout,
            concurrency=self.workers,
            extra_environment={"CRM_BASE_URL": self.crm_url, **self.end_handler_environment},
            end_function=self.end_function,
        )

    def _crm_secret(self, value: Any) -> Any:
        """The CRM secret's value: the one given with ``crm_url``, or the template's with the fake CRM's token."""
        if self.external_crm_url is not None:
            return self.external_crm_secret or (value if isinstance(value, dict) else {})
        return {**(value if isinstance(value, dict) else {}), "access_token": self.crm.token}

    def _start_functions(self) -> AsyncInvoker:
        invoker = self._async = AsyncInvoker(
            self._provisioner.clients["sqs"],
            delivery_queue_url=self.delivery_queue_url,
            failed_events_queue_url=self.failed_events_queue_url,
            function_arn=self.function_arn,
            max_retries=self.max_retries,
            retry_delays=self.retry_delays,
            max_event_age=self.max_event_age,
            workers=self.workers,
            stopping=self._stopping,
            label=self.stack_name,
        )
        for planned in self._planned:
            if planned.kind not in FUNCTION_TYPES:
                continue
            config = self._function_config(planned.logical_id, planned.name)
            self._functions.add(config, lambda_environment(config, self.moto_url), invoker.run_job, invoker.recover)
        self.function_environment = dict(self._functions.pool().config.environment)
        self._functions.start()
        for planned in self._planned:
            if planned.kind == FUNCTION_URL_TYPE:
                url = self._functions.serve(self, planned.logical_id, function=planned.name)
                self.function_urls[planned.name] = url
                self._provisioner.resources.add(
                    planned.logical_id,
                    function_arn(planned.name),
                    FunctionUrl=url,
                    FunctionArn=function_arn(planned.name),
                )
        return invoker

    def environment_of(self, function: str) -> dict[str, str]:
        """The environment ``function``'s processes run with: the template's variables and Lambda's own."""
        return lambda_environment(self._functions.pool(function).config, self.moto_url)

    # --- environments for clients and for the function ----------------------------------------------

    # --- dispatcher ---------------------------------------------------------------------------------

    def invoke(self, payload: Any, timeout: float | None = None, *, function: str | None = None) -> InvocationOutcome:
        """A synchronous (RequestResponse) invocation of the EndHandler (or ``function``, by name).

        It shares the environments with async events but goes ahead of queued ones: the caller waits.
        """
        if not self._started or self._stopping.is_set():
            raise RuntimeError("the local stack is not running")
        return self._functions.invoke(payload, timeout, function)

    def invoke_async(self, payload: Any) -> str:
        """An ``Event`` invocation of the EndHandler: queued like an EventBridge delivery; returns the message id."""
        answer = self._provisioner.clients["sqs"].send_message(
            QueueUrl=self.delivery_queue_url, MessageBody=json.dumps(payload)
        )
        return str(answer["MessageId"])

    def function_named(self, name: str, qualifier: str | None = None) -> str | None:
        """Which of our functions ``name`` (name, ARN or partial ARN, optionally qualified) is, if any."""
        return self._functions.function_named(name, qualifier)

    def is_function(self, name: str, qualifier: str | None = None) -> bool:
        """Whether ``name`` is the EndHandler (by name, ARN or partial ARN)."""
        return self.function_named(name, qualifier) == self.function_name

    def function_arn_for(self, name: str) -> str:
        if name.startswith("arn:"):
            return name
        return function_arn(name.split("function:")[-1])

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Block until the delivery queue is empty and nothing runs or waits for a retry."""
        if not self._started or self._stopping.is_set():
            raise RuntimeError("the local stack is not running")
        deadline = time.monotonic() + timeout
        while True:
            pending = self._pending()
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"local stack {self.stack_name} not idle after {timeout:g} s: {', '.join(pending)}")
            time.sleep(0.05)

    def _pending(self) -> list[str]:
        pending = self._functions.pending()
        assert self._async is not None
        return pending + self._async.queue_pending(bool(pending))

    def in_flight(self) -> list[Any]:
        """Every event handed to the EndHandler and not finished yet: see :meth:`AsyncInvoker.in_flight`."""
        if self._async is None or self._stopping.is_set():
            raise RuntimeError("the local stack is not running")
        return self._async.in_flight()

    def counts(self, function: str | None = None) -> dict[str, int]:
        """The EndHandler's (or ``function``'s) counters: see :meth:`FunctionHost.counts`."""
        return self._functions.counts(function)

    def worker_pids(self, function: str | None = None) -> list[int]:
        """Process ids of the EndHandler's (or ``function``'s) warm execution environments."""
        return self._functions.worker_pids(function)

    def log_records(self, function: str | None = None) -> list[dict[str, Any]]:
        """Every JSON line in the EndHandler's (or ``function``'s) log so far: Powertools, EMF, platform."""
        return self._functions.log_records(self.log_paths.get(function or self.function_name, self.log_path))

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` pointed at this stack (Lambda at the Invoke endpoint)."""
        endpoint = self.invoke_url if service == "lambda" else self.moto_url
        return local_client(service, endpoint, read_timeout=INIT_TIMEOUT_SECONDS + self.function_timeout + 30)
