"""Which bus, queue and function an operator command talks to, and the boto3 clients to reach them.

A target is either a deployed stack (``--stack NAME``: its CloudFormation outputs name everything)
or explicit names (``--bus``, ``--queue-url``, ``--function``). Every way this can go wrong (no
credentials, no region, endpoint unreachable, stack or output missing) becomes a
:class:`TargetError` whose message says what to do, instead of a botocore traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

#: boto3 clients are not typed here (no per-service stubs are installed); this alias documents intent.
Client = Any

#: The stack outputs each command needs (see template.yaml ``Outputs``).
OUTPUT_BUS = "EventBusName"
OUTPUT_SOURCE = "EventSource"
OUTPUT_STAGE = "Stage"
OUTPUT_QUEUE_URL = "FailedEventsQueueUrl"
OUTPUT_FUNCTION = "EndHandlerFunctionName"
OUTPUT_TIMEOUT = "EndHandlerTimeoutSeconds"
#: The alias the rule and OnFailure use (AutoPublishAlias): replay invokes it, not $LATEST, which
#: after a rolled-back deployment still holds the version that was rolled back.
OUTPUT_FUNCTION_ALIAS = "EndHandlerAliasName"

#: Used when neither ``--stack`` nor ``--function-timeout`` tells the function's timeout: Lambda's maximum.
DEFAULT_FUNCTION_TIMEOUT = 900


class TargetError(Exception):
    """The target could not be resolved or reached; the message tells the operator what to do."""


@dataclass(frozen=True)
class Target:
    """Everything a command may need to know about where it sends and reads."""

    stack_name: str | None = None
    bus_name: str | None = None
    queue_url: str | None = None
    function_name: str | None = None
    event_source: str | None = None
    stage: str | None = None
    function_timeout_seconds: int | None = None
    outputs: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """A short human label: the stack name, or the explicit names given."""
        if self.stack_name:
            return f"stack {self.stack_name}"
        parts = [f"{label} {value}" for label, value in self._explicit() if value]
        return ", ".join(parts) or "no target"

    def _explicit(self) -> list[tuple[str, str | None]]:
        return [("bus", self.bus_name), ("queue", self.queue_url), ("function", self.function_name)]

    def require_bus(self) -> str:
        """The event bus name, or a TargetError saying how to give one."""
        return _required(self.bus_name, "an event bus", "--bus NAME", OUTPUT_BUS, self.stack_name)

    def require_queue_url(self) -> str:
        """The failed-events queue URL, or a TargetError saying how to give one."""
        return _required(
            self.queue_url, "the failed-events queue", "--queue-url URL", OUTPUT_QUEUE_URL, self.stack_name
        )

    def require_function(self) -> str:
        """The End function's name, or a TargetError saying how to give one."""
        return _required(self.function_name, "the End function", "--function NAME", OUTPUT_FUNCTION, self.stack_name)


def _required(value: str | None, what: str, flag: str, output: str, stack_name: str | None) -> str:
    if value:
        return value
    if stack_name:
        raise TargetError(f"stack {stack_name} has no {output} output, so {what} is unknown; pass {flag}")
    raise TargetError(f"this command needs {what}: pass {flag} or --stack NAME")


class Aws:
    """A boto3 session plus the client settings every operator command shares.

    Tests and benchmarks build one around their own session (endpoint, counters); the CLI builds
    one from the environment, exactly as the AWS CLI would (``AWS_PROFILE``, ``AWS_REGION``,
    ``AWS_ENDPOINT_URL``...).
    """

    def __init__(
        self,
        session: boto3.session.Session | None = None,
        *,
        region: str | None = None,
        profile: str | None = None,
        max_pool_connections: int = 32,
    ) -> None:
        try:
            self.session = session or boto3.session.Session(profile_name=profile, region_name=region)
        except botocore.exceptions.ProfileNotFound as exc:
            raise TargetError(f"AWS profile {profile!r} is not configured ({exc})") from None
        self.max_pool_connections = max_pool_connections
        self._hooks: list[tuple[str, Any]] = []

    def on(self, event_name: str, handler: Any) -> None:
        """Register a botocore event hook on every client made from now on (benchmarks count calls)."""
        self._hooks.append((event_name, handler))

    def check(self) -> None:
        """Fail early, with advice, when boto3 has no region or no credentials to work with."""
        if not self.session.region_name:
            raise TargetError(
                "no AWS region configured: pass --region, set AWS_REGION, or export the environment "
                "that `aftercall local` prints"
            )
        if self.session.get_credentials() is None:
            raise TargetError(
                "no AWS credentials found: set AWS_PROFILE (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), "
                "or export the environment that `aftercall local` prints to use the local stack"
            )

    def client(
        self,
        service: str,
        *,
        read_timeout: float = 30.0,
        max_attempts: int | None = None,
        pool: int | None = None,
        endpoint_url: str | None = None,
    ) -> Client:
        """A client with bounded timeouts; ``max_attempts=1`` disables SDK retries (Lambda invoke).

        ``endpoint_url`` overrides the endpoint (else boto3's own: ``AWS_ENDPOINT_URL[_<SERVICE>]``).
        """
        retries: dict[str, Any] = {"mode": "standard"}
        if max_attempts is not None:
            retries["total_max_attempts"] = max_attempts
        elif "AWS_MAX_ATTEMPTS" not in os.environ:
            retries["total_max_attempts"] = 4
        config = Config(
            connect_timeout=5,
            read_timeout=read_timeout,
            retries=retries,  # type: ignore[arg-type]
            max_pool_connections=pool or self.max_pool_connections,
        )
        client = self.session.client(service, config=config, endpoint_url=endpoint_url)  # type: ignore[call-overload]
        for event_name, handler in self._hooks:
            client.meta.events.register(event_name, handler)
        return client

    @property
    def region(self) -> str | None:
        return self.session.region_name


def describe_aws_error(exc: BaseException) -> str | None:
    """A one-line operator explanation for errors that mean "cannot reach or use AWS", else None."""
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    if isinstance(exc, botocore.exceptions.NoRegionError):
        return "no AWS region configured: pass --region or set AWS_REGION"
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectionClosedError):
        return f"cannot reach the AWS endpoint ({exc}); is AWS_ENDPOINT_URL right, is `aftercall local` running?"
    if isinstance(exc, botocore.exceptions.ConnectTimeoutError | botocore.exceptions.ReadTimeoutError):
        return f"the AWS endpoint did not answer in time ({exc})"
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        if code in ("UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException"):
            return f"AWS refused the credentials ({code}): refresh them (e.g. `aws sso login`) and retry"
        if code in ("AccessDenied", "AccessDeniedException"):
            return f"AWS denied access: {error.get('Message', code)}"
    return None


def resolve_target(
    aws: Aws,
    *,
    stack: str | None = None,
    bus: str | None = None,
    queue_url: str | None = None,
    function: str | None = None,
) -> Target:
    """Resolve ``--stack`` (CloudFormation outputs) or the explicit names into a :class:`Target`.

    ``--stack`` and explicit names are exclusive: mixing them would make it ambiguous which bus
    or queue an operator is about to touch.
    """
    explicit = {"--bus": bus, "--queue-url": queue_url, "--function": function}
    given = [flag for flag, value in explicit.items() if value]
    if stack and given:
        raise ValueError(f"pass either --stack or {'/'.join(given)}, not both: the stack's outputs already name them")
    for flag, value in explicit.items():
        if value is not None and not value.strip():
            raise ValueError(f"{flag} must not be empty")
    if not stack:
        return Target(bus_name=bus, queue_url=queue_url, function_name=function)
    outputs = stack_outputs(aws, stack)
    timeout = outputs.get(OUTPUT_TIMEOUT)
    return Target(
        stack_name=stack,
        bus_name=outputs.get(OUTPUT_BUS),
        queue_url=outputs.get(OUTPUT_QUEUE_URL),
        function_name=_qualified(outputs.get(OUTPUT_FUNCTION), outputs.get(OUTPUT_FUNCTION_ALIAS)),
        event_source=outputs.get(OUTPUT_SOURCE),
        stage=outputs.get(OUTPUT_STAGE),
        function_timeout_seconds=int(timeout) if timeout and timeout.isdigit() else None,
        outputs=outputs,
    )


def _qualified(function: str | None, alias: str | None) -> str | None:
    return f"{function}:{alias}" if function and alias else function


def stack_outputs(aws: Aws, stack: str) -> dict[str, str]:
    """The stack's outputs as a dict; TargetError if the stack does not exist or cannot be read."""
    aws.check()
    client = aws.client("cloudformation", read_timeout=15)
    try:
        response = client.describe_stacks(StackName=stack)
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "ValidationError" and "does not exist" in str(error.get("Message", "")):
            raise TargetError(
                f"stack {stack!r} does not exist in {aws.region}: check the name and region "
                "(`aws cloudformation list-stacks`), or pass --bus/--queue-url/--function"
            ) from None
        raise TargetError(describe_aws_error(exc) or f"could not read stack {stack!r}: {exc}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise TargetError(describe_aws_error(exc) or f"could not read stack {stack!r}: {exc}") from None
    stacks = response.get("Stacks", [])
    if not stacks:
        raise TargetError(f"stack {stack!r} does not exist in {aws.region}")
    status = str(stacks[0].get("StackStatus", ""))
    if status.endswith("_FAILED") or status in ("DELETE_COMPLETE", "ROLLBACK_COMPLETE"):
        raise TargetError(f"stack {stack!r} is in state {status}; its resources may not exist")
    return {str(o["OutputKey"]): str(o["OutputValue"]) for o in stacks[0].get("Outputs", [])}
