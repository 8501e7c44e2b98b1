"""Choosing the CRM: the template parameter, the runtime's settings and ``build_crm`` agree.

Run in a fresh interpreter where imports matter: a cold start must load only the adapter in use.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aftercall.crm.hubspot import HubSpotCrm
from aftercall.errors import ConfigurationError
from aftercall.handler import build_crm
from aftercall.settings import CRM_PROVIDERS, EndHandlerSettings
from aftercall_ops.emulator.template import load_template

ROOT = Path(__file__).resolve().parents[2]
ADAPTER_MODULES = {name: f"aftercall.crm.{name}" for name in ("hubspot", "salesforce", "zendesk", "webhook")}
ENV = {"STAGE": "sandbox", "IDEMPOTENCY_TABLE": "t", "CRM_SECRET_ID": "aftercall/sandbox/crm"}


def test_the_template_offers_exactly_the_providers_the_runtime_supports() -> None:
    # Given the template's CrmProvider parameter
    allowed = load_template()["Parameters"]["CrmProvider"]["AllowedValues"]
    # When compared with the runtime's list
    # Then they are the same, so a deployable value is never refused at run time (and vice versa)
    assert sorted(allowed) == sorted(CRM_PROVIDERS)
    assert set(CRM_PROVIDERS) == set(ADAPTER_MODULES)


@pytest.mark.parametrize("provider", sorted(ADAPTER_MODULES))
def test_settings_accept_each_provider_case_insensitively(provider: str) -> None:
    # Given CRM_PROVIDER as a user might type it in samconfig
    # When the settings are read
    settings = EndHandlerSettings.from_env({**ENV, "CRM_PROVIDER": f" {provider.upper()} "})
    # Then the provider is recognised
    assert settings.crm_provider == provider


def test_an_unknown_provider_names_the_supported_ones() -> None:
    # Given a CRM that has no adapter
    # When the settings are read
    # Then the error lists what is supported
    with pytest.raises(ConfigurationError, match="supported are hubspot, salesforce, zendesk, webhook"):
        EndHandlerSettings.from_env({**ENV, "CRM_PROVIDER": "pipedrive"})


@pytest.mark.parametrize("provider", sorted(ADAPTER_MODULES))
def test_build_crm_imports_only_the_adapter_in_use(provider: str) -> None:
    # Given a fresh interpreter (a cold start) configured for one provider
    env = {**ENV, "CRM_PROVIDER": provider, "CRM_BASE_URL": "https://crm.example"}
    script = f"""
import json, sys
from aftercall.handler import build_crm
from aftercall.settings import EndHandlerSettings
crm = build_crm(EndHandlerSettings.from_env({json.dumps(env)}))
adapters = {sorted(ADAPTER_MODULES.values())!r}
print(json.dumps({{"name": crm.name, "loaded": sorted(m for m in sys.modules if m in adapters)}}))
"""
    # When the runtime builds its CRM adapter
    result = subprocess.run(  # noqa: S603 - our interpreter, our script
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT / 'layers' / 'aftercall'}", "AWS_DEFAULT_REGION": "us-east-1"},
        timeout=60,
    )
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    # Then it is that provider's adapter, and no other adapter module was imported
    assert answer == {"name": provider, "loaded": [ADAPTER_MODULES[provider]]}


def test_the_crm_read_timeout_can_be_set_from_the_environment() -> None:
    # Given CRM_READ_TIMEOUT_SECONDS (a CRM that is slow to answer, or a local run that wants short waits)
    settings = EndHandlerSettings.from_env(
        {**ENV, "CRM_BASE_URL": "https://crm.example", "CRM_READ_TIMEOUT_SECONDS": "2.5"}
    )
    # When the runtime builds its CRM adapter
    crm = build_crm(settings)
    # Then its HTTP client waits that long for an answer; without the variable it keeps its default
    assert isinstance(crm, HubSpotCrm)
    assert crm.http.read_timeout == 2.5
    default = build_crm(EndHandlerSettings.from_env({**ENV, "CRM_BASE_URL": "https://crm.example"}))
    assert isinstance(default, HubSpotCrm)
    assert default.http.read_timeout == 10.0


@pytest.mark.parametrize("value", ["soon", "0", "-1", "901"])
def test_a_crm_read_timeout_that_is_not_a_sensible_number_is_refused(value: str) -> None:
    # Given a read timeout that is not a number, or not between 0 and the longest Lambda run
    # When the settings are read
    # Then the error names the variable
    with pytest.raises(ConfigurationError, match="CRM_READ_TIMEOUT_SECONDS"):
        EndHandlerSettings.from_env({**ENV, "CRM_READ_TIMEOUT_SECONDS": value})
