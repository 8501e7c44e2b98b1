"""Template gaps a security reviewer found (issue 11, item 7), checked as classes on the transformed template.

* Every role statement that may use the stack's KMS key says through which service
  (``kms:ViaService``): a leaked function credential cannot decrypt with the key directly.
* Every key-policy statement for an AWS service principal is limited to this account and stack
  (``aws:SourceAccount``/``aws:SourceArn``) or to its own encryption context: no confused deputy.
* Every queue refuses requests over plain HTTP.
* ``make iac-check`` scans the template as SAM transforms it too, where the generated roles and
  function URLs are; the checkov skips written on a function reach what SAM generates from it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from aftercall_ops.emulator.template import PROJECT_ROOT, load_template, transformed_for_scanners

STACK_KEY = {"Fn::GetAtt": ["EncryptionKey", "Arn"]}


@pytest.fixture(scope="module")
def transformed() -> dict[str, Any]:
    resources: dict[str, Any] = transformed_for_scanners()["Resources"]
    return resources


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(resources: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(role, statement) for every inline statement of every IAM role."""
    return [
        (name, statement)
        for name, resource in resources.items()
        if resource["Type"] == "AWS::IAM::Role"
        for policy in resource["Properties"].get("Policies", [])
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def test_every_role_uses_the_stack_key_only_through_a_named_service(transformed: dict[str, Any]) -> None:
    # Given every role statement that allows KMS actions on the stack's key
    key_users = [
        (role, statement)
        for role, statement in _statements(transformed)
        if statement["Effect"] == "Allow"
        and any(str(action).startswith("kms:") for action in _as_list(statement["Action"]))
        and STACK_KEY in _as_list(statement["Resource"])
    ]
    assert {role for role, _ in key_users} >= {"EndHandlerRole", "IngestFunctionRole"}
    # Then each names the services it may use the key through
    for role, statement in key_users:
        via = statement.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService")
        assert via, (role, statement.get("Sid"))
        assert all("amazonaws.com" in str(service) for service in _as_list(via)), (role, via)


def test_the_end_handler_may_use_the_key_for_its_secret_and_its_topic_only(transformed: dict[str, Any]) -> None:
    (statement,) = [
        s for role, s in _statements(transformed) if role == "EndHandlerRole" and STACK_KEY in _as_list(s["Resource"])
    ]
    services = {str(v["Fn::Sub"]).split(".")[0] for v in statement["Condition"]["StringEquals"]["kms:ViaService"]}
    assert services == {"secretsmanager", "sns"}


def test_every_service_principal_in_the_key_policy_is_limited_to_this_stack(transformed: dict[str, Any]) -> None:
    # Given the key policy's statements for AWS services
    statements = transformed["EncryptionKey"]["Properties"]["KeyPolicy"]["Statement"]
    for_services = [s for s in statements if "Service" in s.get("Principal", {})]
    assert len(for_services) >= 2
    # Then each is conditioned on this account and source, or on its own encryption context
    for statement in for_services:
        condition = statement.get("Condition", {})
        scoped = "aws:SourceAccount" in condition.get("StringEquals", {}) and "aws:SourceArn" in condition.get(
            "ArnLike", {}
        )
        by_context = any(key.startswith("kms:EncryptionContext:") for key in condition.get("ArnLike", {}))
        assert scoped or by_context, statement.get("Sid")
    (alarms,) = [s for s in for_services if s["Principal"]["Service"] == "cloudwatch.amazonaws.com"]
    assert alarms["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"].endswith(":alarm:${AWS::StackName}-*")


def test_every_queue_refuses_requests_over_plain_http(transformed: dict[str, Any]) -> None:
    # Given every queue and every queue policy
    queues = {name for name, r in transformed.items() if r["Type"] == "AWS::SQS::Queue"}
    denied: set[str] = set()
    for resource in transformed.values():
        if resource["Type"] != "AWS::SQS::QueuePolicy":
            continue
        properties = resource["Properties"]
        for statement in properties["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Deny" and statement.get("Condition") == {
                "Bool": {"aws:SecureTransport": "false"}
            }:
                denied.update(queue["Ref"] for queue in properties["Queues"])
    # Then each of them has a Deny for aws:SecureTransport false
    assert queues >= {"FailedEventsQueue", "FailedFollowUpsQueue"}
    assert queues == denied


def test_the_scanned_template_carries_each_functions_skips_to_what_sam_generates(transformed: dict[str, Any]) -> None:
    # Given the template as written and as scanned
    written = load_template()["Resources"]
    # Then the generated roles and the function URL are there, with their function's skips and reasons
    for function, generated in [("FollowUpFunction", "FollowUpFunctionRole"), ("IngestFunction", "IngestFunctionUrl")]:
        skips = transformed[generated]["Metadata"]["checkov"]["skip"]
        assert skips == written[function]["Metadata"]["checkov"]["skip"]
        assert all(skip["comment"].strip() for skip in skips)
    # And nothing SAM generates from a function without skips gets any
    assert "checkov" not in transformed.get("SchedulerRole", {}).get("Metadata", {})


def test_make_iac_check_scans_the_transformed_template() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    recipe = makefile.split("\niac-check:", 1)[1].split("\n\n", 1)[0]
    assert "python -m aftercall_ops.emulator.template --transformed $(TRANSFORMED)" in recipe
    assert re.search(r"checkov -f \$\(TRANSFORMED\) --framework cloudformation", recipe)
    assert re.search(r"checkov -f template\.yaml --framework cloudformation", recipe)


def test_throttled_webhooks_raise_an_alarm(transformed: dict[str, Any]) -> None:
    # Given the ingest function's reserved concurrency, which a flood can use up
    alarm = transformed["IngestThrottlesAlarm"]["Properties"]
    # Then a throttled webhook (429 to the vendor) notifies the alarm topic within five minutes
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", "Throttles")
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "IngestFunction"}}]
    assert (alarm["Threshold"], alarm["Period"]) == (1, 300)
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
