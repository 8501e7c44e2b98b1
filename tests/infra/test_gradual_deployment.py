"""Gradual deployment of the End function, proven on the template as SAM transforms it.

A bad End function touches every call: in live, a new version takes 10% of the traffic for five
minutes first, and CodeDeploy moves the alias back if the function's errors alarm or the
failed-events arrivals alarm fires. These tests read the wiring CloudFormation would deploy.
"""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from aftercall_ops.emulator.template import PROJECT_ROOT, load_template, sam_transform

ALIAS = "current"


def expanded(deployment_type: str) -> dict[str, Any]:
    parameters = {"Stage": "live", "DeploymentType": deployment_type}
    resources: dict[str, Any] = sam_transform(load_template(), parameters)["Resources"]
    return resources


def only(resources: dict[str, Any], kind: str, **matching: Any) -> tuple[str, dict[str, Any]]:
    found = [
        (name, r.get("Properties", {}))
        for name, r in resources.items()
        if r["Type"] == kind and all(r.get("Properties", {}).get(k) == v for k, v in matching.items())
    ]
    assert len(found) == 1, f"expected one {kind} matching {matching}, found {[n for n, _ in found]}"
    return found[0]


@pytest.fixture(scope="module")
def canary() -> dict[str, Any]:
    return expanded("Canary10Percent5Minutes")


def test_every_deploy_publishes_a_version_behind_one_alias(canary: dict[str, Any]) -> None:
    # Given the live template, When SAM transforms it
    # Then the EndHandler has one alias, pointing at the version this deploy published
    alias_id, alias = only(canary, "AWS::Lambda::Alias", FunctionName={"Ref": "EndHandler"})
    assert alias["Name"] == ALIAS
    version_id, _ = only(canary, "AWS::Lambda::Version", FunctionName={"Ref": "EndHandler"})
    assert alias["FunctionVersion"] == {"Fn::GetAtt": [version_id, "Version"]}
    # And CloudFormation hands the alias's update to CodeDeploy
    policy = canary[alias_id]["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    assert policy["DeploymentGroupName"] == {"Ref": "EndHandlerDeploymentGroup"}


def test_the_conversation_ended_rule_targets_the_alias_not_latest(canary: dict[str, Any]) -> None:
    # Given the alias
    alias_id, _ = only(canary, "AWS::Lambda::Alias", FunctionName={"Ref": "EndHandler"})
    # When the rule's target is read
    (target,) = canary["EndHandlerConversationEnded"]["Properties"]["Targets"]
    # Then events reach the alias, and EventBridge may invoke the alias only, from this rule only
    assert target["Arn"] == {"Ref": alias_id}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}}
    _, permission = only(canary, "AWS::Lambda::Permission", FunctionName={"Ref": alias_id})
    assert permission["Principal"] == "events.amazonaws.com"
    assert permission["SourceArn"] == {"Fn::GetAtt": ["EndHandlerConversationEnded", "Arn"]}


def test_retries_and_on_failure_apply_to_the_alias(canary: dict[str, Any]) -> None:
    # When the EndHandler's event invoke config is read
    _, config = only(canary, "AWS::Lambda::EventInvokeConfig", FunctionName={"Ref": "EndHandler"})
    # Then it has the alias as qualifier (events invoke the alias, so a $LATEST config would never apply)
    assert config["Qualifier"] == ALIAS
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}
    assert config["MaximumRetryAttempts"] == 2


def test_the_deployment_group_rolls_back_on_the_errors_and_failed_events_alarms(canary: dict[str, Any]) -> None:
    # When the CodeDeploy deployment group is read
    group = canary["EndHandlerDeploymentGroup"]["Properties"]
    # Then it shifts traffic as the parameter says and watches both alarms
    assert group["DeploymentConfigName"] == {
        "Fn::Sub": ["CodeDeployDefault.Lambda${ConfigName}", {"ConfigName": "Canary10Percent5Minutes"}]
    }
    assert group["AlarmConfiguration"] == {
        "Enabled": True,
        "Alarms": [{"Name": {"Ref": "EndHandlerErrorsAlarm"}}, {"Name": {"Ref": "FailedEventsArrivingAlarm"}}],
    }
    assert "DEPLOYMENT_STOP_ON_ALARM" in group["AutoRollbackConfiguration"]["Events"]
    assert group["AutoRollbackConfiguration"]["Enabled"] is True


def test_the_failed_events_alarm_of_a_deployment_counts_arrivals_not_what_was_already_waiting(
    canary: dict[str, Any],
) -> None:
    # When the alarm is read
    alarm = canary["FailedEventsArrivingAlarm"]["Properties"]
    # Then it fires on a message sent to the failed-events queue within a minute, so events that
    # already waited before the deploy (which the new version may be meant to fix) do not block it
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == ("AWS/SQS", "NumberOfMessagesSent", "Sum")
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["FailedEventsQueue", "QueueName"]}}]
    errors = canary["EndHandlerErrorsAlarm"]["Properties"]
    assert (errors["Namespace"], errors["MetricName"]) == ("AWS/Lambda", "Errors")


def test_sandbox_deploys_all_at_once_and_live_with_a_canary() -> None:
    # Given samconfig.toml's two environments
    config = tomllib.loads((PROJECT_ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    overrides = {env: config[env]["deploy"]["parameters"]["parameter_overrides"] for env in ("sandbox", "live")}
    # Then sandbox takes a new version at once and live shifts 10% first for five minutes
    assert 'DeploymentType="AllAtOnce"' in overrides["sandbox"]
    assert 'DeploymentType="Canary10Percent5Minutes"' in overrides["live"]
    # And the transform of the sandbox's choice names CodeDeploy's all-at-once configuration
    group = expanded("AllAtOnce")["EndHandlerDeploymentGroup"]["Properties"]
    assert group["DeploymentConfigName"]["Fn::Sub"][1] == {"ConfigName": "AllAtOnce"}
