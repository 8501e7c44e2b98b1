"""Each function's settings come from one reader, and a bad value names its variable."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aftercall.errors import ConfigurationError
from aftercall.settings import (
    DEFAULT_RETENTION_SECONDS,
    EndHandlerSettings,
    EnvReader,
    FollowUpSettings,
    IngestSettings,
    metrics_namespace,
    service_name,
    trace_header,
)

END_HANDLER_ENV = {"STAGE": "live", "IDEMPOTENCY_TABLE": "t", "CRM_SECRET_ID": "s"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", None), ("   ", None), (" https://crm.example ", "https://crm.example")],
)
def test_text_values_are_stripped_and_empty_is_unset(value: str, expected: str | None) -> None:
    # Given a variable set to a value (or to blanks, as a template's empty parameter gives)
    read = EnvReader({"CRM_BASE_URL": value})
    # When it is read, Then blanks count as unset
    assert read.text("CRM_BASE_URL") == expected


@pytest.mark.parametrize(
    ("reading", "env", "message"),
    [
        (lambda r: r.required("EVENT_BUS_NAME"), {}, "EVENT_BUS_NAME is not set"),
        (lambda r: r.integer("CRM_SECRET_MAX_AGE", 300), {"CRM_SECRET_MAX_AGE": "5m"}, "not a whole number"),
        (lambda r: r.seconds("CRM_READ_TIMEOUT_SECONDS"), {"CRM_READ_TIMEOUT_SECONDS": "901"}, "at most 900"),
        (lambda r: r.rate("CRM_RATE_LIMIT_PER_SECOND"), {"CRM_RATE_LIMIT_PER_SECOND": "-1"}, "0 \\(off\\) or more"),
        (lambda r: r.choice("STAGE", ("sandbox", "live")), {"STAGE": "prod"}, "supported are sandbox, live"),
        (lambda r: r.choice("STAGE", ("sandbox", "live")), {}, "STAGE is not set"),
    ],
)
def test_a_bad_or_missing_value_is_a_configuration_error_naming_the_variable(
    reading: Callable[[EnvReader], object], env: dict[str, str], message: str
) -> None:
    # Given an environment with one variable wrong or missing
    read = EnvReader(env)
    # When it is read, Then the error names the variable and what is wrong
    with pytest.raises(ConfigurationError, match=message):
        reading(read)


def test_a_choice_with_a_default_takes_it_when_unset_and_ignores_case() -> None:
    # Given a choice left unset, and one written in capitals
    read = EnvReader({"UNKNOWN_CALLER_POLICY": " PARK "})
    # When both are read, Then the default and the lower-cased value come back
    assert read.choice("CRM_PROVIDER", ("hubspot", "zendesk"), "hubspot") == "hubspot"
    assert read.choice("UNKNOWN_CALLER_POLICY", ("create", "park"), "create") == "park"


def test_the_follow_up_function_reads_its_table_bus_and_sender() -> None:
    # Given the FollowUp function's environment as the template sets it
    env = {"IDEMPOTENCY_TABLE": "ledger", "EVENT_BUS_NAME": "aftercall-live", "FOLLOW_UP_FROM_EMAIL": ""}
    # When its settings are read
    settings = FollowUpSettings.from_env(env)
    # Then the empty sender means "no email follow-ups", and the ledger keeps records as long as the EndHandler's
    assert (settings.idempotency_table, settings.event_bus_name, settings.from_email) == (
        "ledger",
        "aftercall-live",
        None,
    )
    assert settings.retention_seconds == DEFAULT_RETENTION_SECONDS


def test_the_follow_up_function_without_its_table_fails_naming_it() -> None:
    # Given a FollowUp environment without the table (before: a bare KeyError)
    # When its settings are read, Then the error names the variable
    with pytest.raises(ConfigurationError, match="IDEMPOTENCY_TABLE is not set"):
        FollowUpSettings.from_env({"EVENT_BUS_NAME": "b"})


def test_ingest_takes_the_region_lambda_sets_for_the_events_it_parks() -> None:
    # Given the ingest environment in eu-west-1, and one outside Lambda
    inside = IngestSettings.from_env({"STAGE": "live", "EVENT_BUS_NAME": "b", "AWS_REGION": "eu-west-1"})
    outside = IngestSettings.from_env({"STAGE": "live", "EVENT_BUS_NAME": "b"})
    # When read, Then the region is Lambda's, or us-east-1 where nothing set one
    assert (inside.region, outside.region) == ("eu-west-1", "us-east-1")


def test_the_end_handler_checks_its_phone_region() -> None:
    # Given a region libphonenumber does not know
    env = {**END_HANDLER_ENV, "DEFAULT_PHONE_REGION": "XX"}
    # When the EndHandler's settings are read, Then the variable is named
    with pytest.raises(ConfigurationError, match="DEFAULT_PHONE_REGION"):
        EndHandlerSettings.from_env(env)
    assert EndHandlerSettings.from_env({**END_HANDLER_ENV, "DEFAULT_PHONE_REGION": "gb"}).default_phone_region == "GB"


def test_powertools_names_and_the_trace_header_fall_back_outside_lambda() -> None:
    # Given an environment with nothing Lambda or the template would set, and one with everything
    empty: dict[str, str] = {}
    full = {
        "POWERTOOLS_SERVICE_NAME": "aftercall-ingest",
        "POWERTOOLS_METRICS_NAMESPACE": "Calls",
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
    }
    # When read, Then the defaults apply only where nothing was set
    assert (service_name(empty), metrics_namespace(empty), trace_header(empty)) == ("aftercall", "Aftercall", "")
    assert (service_name(full), metrics_namespace(full)) == ("aftercall-ingest", "Calls")
    assert trace_header(full).endswith("Sampled=1")
