"""Each function's configuration, read once from the environment the template sets.

:class:`EnvReader` is the one place the runtime reads environment variables: it parses each kind
of value one way and names the variable in every :class:`ConfigurationError`, so a typo in a
template parameter fails the first invocation with a message that says which one. A function's
settings are a frozen dataclass with a ``from_env``; a new setting is a field and one line there.
Plain dataclasses, not pydantic models: this module is on every cold start's import path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from aftercall.errors import ConfigurationError

#: DLQ retention (14 days) plus a 7-day replay window: a replayed event still finds its record.
DEFAULT_RETENTION_SECONDS = (14 + 7) * 24 * 3600
STAGES = ("sandbox", "live")
CRM_PROVIDERS = ("hubspot", "salesforce", "zendesk", "webhook")
UNKNOWN_CALLER_POLICIES = ("create", "park")
#: The ``source`` of Conversation Ended events when the template names none.
DEFAULT_SOURCE = "aftercall.platform"
#: A function URL's request limit (6 MB): an event type ingest ignores, such as ElevenLabs'
#: ``post_call_audio`` (base64 audio, several MB), must still get its 2xx, as ElevenLabs does not retry.
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024
#: Used only when the environment names no service or namespace (tests and tools outside Lambda).
DEFAULT_SERVICE = "aftercall"
DEFAULT_NAMESPACE = "Aftercall"
#: Set by Lambda for each invocation: the active X-Ray trace header.
TRACE_ENV = "_X_AMZN_TRACE_ID"


class EnvReader:
    """Typed reads of environment variables (``os.environ`` unless given a mapping).

    Values are stripped; an empty value counts as unset.
    """

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = os.environ if values is None else values

    def text(self, name: str) -> str | None:
        return self._values.get(name, "").strip() or None

    def required(self, name: str) -> str:
        value = self.text(name)
        if value is None:
            raise ConfigurationError(f"environment variable {name} is not set (template.yaml sets it)")
        return value

    def choice(self, name: str, options: tuple[str, ...], default: str | None = None) -> str:
        """One of ``options`` (case-insensitive); ``default`` when unset, required when it has none."""
        raw = self.text(name)
        if raw is None and default is not None:
            return default
        value = self.required(name).lower() if raw is None else raw.lower()
        if value not in options:
            raise ConfigurationError(f"{name}={value!r}: supported are {', '.join(options)}")
        return value

    def integer(self, name: str, default: int) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigurationError(f"environment variable {name}={raw!r} is not a whole number") from None

    def seconds(self, name: str) -> float | None:
        """A duration a Lambda run can hold: more than 0 and at most 900 (None when unset)."""
        raw = self.text(name)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise ConfigurationError(f"environment variable {name}={raw!r} is not a number of seconds") from None
        if not 0 < value <= 900:
            raise ConfigurationError(f"environment variable {name}={raw!r} must be more than 0 and at most 900")
        return value

    def rate(self, name: str) -> float | None:
        """A per-second rate; 0 or unset means off (None)."""
        raw = self.text(name)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise ConfigurationError(f"environment variable {name}={raw!r} is not a number") from None
        if not 0 <= value < float("inf"):
            raise ConfigurationError(f"environment variable {name}={raw!r} must be 0 (off) or more")
        return value or None

    def flag(self, name: str) -> bool:
        return (self.text(name) or "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class ObservabilitySettings:
    """The Powertools service name and metrics namespace (each function's own, from the template)."""

    service: str = DEFAULT_SERVICE
    namespace: str = DEFAULT_NAMESPACE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ObservabilitySettings:
        read = EnvReader(env)
        return cls(
            service=read.text("POWERTOOLS_SERVICE_NAME") or DEFAULT_SERVICE,
            namespace=read.text("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE,
        )


def trace_header(env: Mapping[str, str] | None = None) -> str:
    """The running invocation's X-Ray trace header as Lambda set it ("" outside an invocation)."""
    return EnvReader(env).text(TRACE_ENV) or ""


@dataclass(frozen=True)
class EndHandlerSettings:
    """What the template sets for the EndHandler."""

    stage: str
    idempotency_table: str
    crm_provider: str
    crm_secret_id: str
    crm_base_url: str | None
    failed_events_queue_url: str | None
    retention_seconds: int = DEFAULT_RETENTION_SECONDS
    secret_max_age: int = 300
    local_mode: bool = False
    #: Follow-ups (EventBridge Scheduler) and notifications (SNS); unset disables those actions.
    follow_up_schedule_group: str | None = None
    follow_up_target_arn: str | None = None
    scheduler_role_arn: str | None = None
    follow_up_dead_letter_arn: str | None = None
    notifications_topic_arn: str | None = None
    #: Most actions of one conversation performed at once (None: all of them; 1: one after another).
    action_concurrency: int | None = None
    #: Seconds to wait for the CRM's answer to one request (None: the client's default, 10 s).
    crm_read_timeout: float | None = None
    #: The CRM's request limit for the whole function, per second (None: no client-side pacing), and
    #: the function's reserved concurrency: each execution environment paces itself to an equal share.
    crm_rate_limit: float | None = None
    reserved_concurrency: int = 1
    #: HubSpot's search limit for the whole function, per second (None: no search pacing).
    crm_search_rate_limit: float | None = None
    #: What happens to a caller the CRM does not know: "create" their record, or "park" the conversation.
    unknown_caller_policy: str = "create"
    #: Region for caller numbers without a country code (None: matched by their digits only).
    default_phone_region: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EndHandlerSettings:
        from aftercall.phones import check_region  # phonenumbers: only the EndHandler needs it

        read = EnvReader(env)
        try:
            region = check_region(read.text("DEFAULT_PHONE_REGION"))
        except ValueError as exc:
            raise ConfigurationError(f"DEFAULT_PHONE_REGION: {exc}") from None
        return cls(
            stage=read.choice("STAGE", STAGES),
            idempotency_table=read.required("IDEMPOTENCY_TABLE"),
            crm_provider=read.choice("CRM_PROVIDER", CRM_PROVIDERS, "hubspot"),
            crm_secret_id=read.required("CRM_SECRET_ID"),
            crm_base_url=read.text("CRM_BASE_URL"),
            failed_events_queue_url=read.text("FAILED_EVENTS_QUEUE_URL"),
            retention_seconds=read.integer("IDEMPOTENCY_RETENTION_SECONDS", DEFAULT_RETENTION_SECONDS),
            secret_max_age=read.integer("CRM_SECRET_MAX_AGE", 300),
            local_mode=read.flag("AFTERCALL_LOCAL"),
            follow_up_schedule_group=read.text("FOLLOW_UP_SCHEDULE_GROUP"),
            follow_up_target_arn=read.text("FOLLOW_UP_TARGET_ARN"),
            scheduler_role_arn=read.text("SCHEDULER_ROLE_ARN"),
            follow_up_dead_letter_arn=read.text("FOLLOW_UP_DEAD_LETTER_ARN"),
            notifications_topic_arn=read.text("NOTIFICATIONS_TOPIC_ARN"),
            action_concurrency=read.integer("ACTION_CONCURRENCY", 0) or None,
            crm_read_timeout=read.seconds("CRM_READ_TIMEOUT_SECONDS"),
            crm_rate_limit=read.rate("CRM_RATE_LIMIT_PER_SECOND"),
            reserved_concurrency=max(1, read.integer("RESERVED_CONCURRENCY", 1)),
            crm_search_rate_limit=read.rate("CRM_SEARCH_RATE_LIMIT_PER_SECOND"),
            unknown_caller_policy=read.choice("UNKNOWN_CALLER_POLICY", UNKNOWN_CALLER_POLICIES, "create"),
            default_phone_region=region,
        )


@dataclass(frozen=True)
class IngestSettings:
    """What the template sets for the ingest functions (webhooks and Amazon Connect)."""

    stage: str
    bus_name: str
    event_source: str = DEFAULT_SOURCE
    secret_id: str | None = None
    failed_events_queue_url: str | None = None
    secret_max_age: int = 300
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: The region put on events parked in the failed-events queue (Lambda sets AWS_REGION).
    region: str = "us-east-1"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IngestSettings:
        read = EnvReader(env)
        return cls(
            stage=read.choice("STAGE", STAGES),
            bus_name=read.required("EVENT_BUS_NAME"),
            event_source=read.text("EVENT_SOURCE") or DEFAULT_SOURCE,
            secret_id=read.text("INGEST_SECRET_ID"),
            failed_events_queue_url=read.text("FAILED_EVENTS_QUEUE_URL"),
            secret_max_age=read.integer("INGEST_SECRET_MAX_AGE", 300),
            max_body_bytes=read.integer("INGEST_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            region=read.text("AWS_REGION") or "us-east-1",
        )


@dataclass(frozen=True)
class FollowUpSettings:
    """What the template sets for the FollowUp function."""

    idempotency_table: str
    #: The bus for Callback Requested events (None: callbacks cannot be sent).
    event_bus_name: str | None = None
    #: The SES-verified sender (None: email follow-ups cannot be sent).
    from_email: str | None = None
    retention_seconds: int = DEFAULT_RETENTION_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FollowUpSettings:
        read = EnvReader(env)
        return cls(
            idempotency_table=read.required("IDEMPOTENCY_TABLE"),
            event_bus_name=read.text("EVENT_BUS_NAME"),
            from_email=read.text("FOLLOW_UP_FROM_EMAIL"),
        )
