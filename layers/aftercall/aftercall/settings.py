"""The runtime's configuration, read once from the environment the template sets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from aftercall.errors import ConfigurationError
from aftercall.phones import check_region

#: DLQ retention (14 days) plus a 7-day replay window: a replayed event still finds its record.
DEFAULT_RETENTION_SECONDS = (14 + 7) * 24 * 3600
CRM_PROVIDERS = ("hubspot", "salesforce", "zendesk", "webhook")


@dataclass(frozen=True)
class Settings:
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
    #: What a new caller becomes in Salesforce: a "Lead" or a "Contact".
    new_caller_object: str = "Lead"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise ConfigurationError(f"environment variable {name} is not set (template.yaml sets it)")
            return value

        def seconds(name: str) -> float | None:
            raw = env.get(name, "").strip()
            if not raw:
                return None
            try:
                value = float(raw)
            except ValueError:
                raise ConfigurationError(f"environment variable {name}={raw!r} is not a number of seconds") from None
            if not 0 < value <= 900:
                raise ConfigurationError(f"environment variable {name}={raw!r} must be more than 0 and at most 900")
            return value

        def rate(name: str) -> float | None:
            raw = env.get(name, "").strip()
            if not raw:
                return None
            try:
                value = float(raw)
            except ValueError:
                raise ConfigurationError(f"environment variable {name}={raw!r} is not a number") from None
            if not 0 <= value < float("inf"):
                raise ConfigurationError(f"environment variable {name}={raw!r} must be 0 (off) or more")
            return value or None

        def integer(name: str, default: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                return int(raw)
            except ValueError:
                raise ConfigurationError(f"environment variable {name}={raw!r} is not a whole number") from None

        stage = required("STAGE")
        if stage not in ("sandbox", "live"):
            raise ConfigurationError(f"STAGE={stage!r}: must be 'sandbox' or 'live'")
        provider = env.get("CRM_PROVIDER", "hubspot").strip().lower()
        if provider not in CRM_PROVIDERS:
            raise ConfigurationError(f"CRM_PROVIDER={provider!r}: supported are {', '.join(CRM_PROVIDERS)}")
        policy = env.get("UNKNOWN_CALLER_POLICY", "").strip().lower() or "create"
        if policy not in ("create", "park"):
            raise ConfigurationError(f"UNKNOWN_CALLER_POLICY={policy!r}: must be 'create' or 'park'")
        try:
            region = check_region(env.get("DEFAULT_PHONE_REGION"))
        except ValueError as exc:
            raise ConfigurationError(f"DEFAULT_PHONE_REGION: {exc}") from None
        return cls(
            stage=stage,
            idempotency_table=required("IDEMPOTENCY_TABLE"),
            crm_provider=provider,
            crm_secret_id=required("CRM_SECRET_ID"),
            crm_base_url=env.get("CRM_BASE_URL", "").strip() or None,
            failed_events_queue_url=env.get("FAILED_EVENTS_QUEUE_URL", "").strip() or None,
            retention_seconds=integer("IDEMPOTENCY_RETENTION_SECONDS", DEFAULT_RETENTION_SECONDS),
            secret_max_age=integer("CRM_SECRET_MAX_AGE", 300),
            local_mode=env.get("AFTERCALL_LOCAL", "").strip().lower() in ("1", "true", "yes"),
            follow_up_schedule_group=env.get("FOLLOW_UP_SCHEDULE_GROUP", "").strip() or None,
            follow_up_target_arn=env.get("FOLLOW_UP_TARGET_ARN", "").strip() or None,
            scheduler_role_arn=env.get("SCHEDULER_ROLE_ARN", "").strip() or None,
            follow_up_dead_letter_arn=env.get("FOLLOW_UP_DEAD_LETTER_ARN", "").strip() or None,
            notifications_topic_arn=env.get("NOTIFICATIONS_TOPIC_ARN", "").strip() or None,
            action_concurrency=integer("ACTION_CONCURRENCY", 0) or None,
            crm_read_timeout=seconds("CRM_READ_TIMEOUT_SECONDS"),
            crm_rate_limit=rate("CRM_RATE_LIMIT_PER_SECOND"),
            reserved_concurrency=max(1, integer("RESERVED_CONCURRENCY", 1)),
            crm_search_rate_limit=rate("CRM_SEARCH_RATE_LIMIT_PER_SECOND"),
            unknown_caller_policy=policy,
            default_phone_region=region,
            new_caller_object=new_caller_object(env.get("NEW_CALLER_OBJECT")),
        )


def new_caller_object(raw: str | None) -> str:
    """``NEW_CALLER_OBJECT`` (``Lead`` by default, or ``Contact``), or a clear error."""
    value = (raw or "").strip().capitalize() or "Lead"
    if value not in ("Lead", "Contact"):
        raise ConfigurationError(f"NEW_CALLER_OBJECT={raw!r}: must be 'Lead' or 'Contact'")
    return value
