"""The deployed shape, checked on the template *after* the SAM transform (what CloudFormation sees).

SAM silently ignores some DeadLetterConfig forms and creates a queue of its own; checking the
expanded template catches that, where reading template.yaml alone would not.
"""

from __future__ import annotations

from typing import Any

import pytest

from aftercall_ops.emulator.template import function_properties, load_template, sam_transform, stack_spec


@pytest.fixture(scope="module")
def expanded() -> dict[str, Any]:
    resources: dict[str, Any] = sam_transform(load_template(), {"Stage": "sandbox"})["Resources"]
    return resources


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def test_both_failure_paths_reach_the_one_failed_events_queue(expanded: dict[str, Any]) -> None:
    # Given the expanded template
    queues = _of_type(expanded, "AWS::SQS::Queue")
    rule = expanded["EndHandlerConversationEnded"]["Properties"]
    invoke_config = expanded["EndHandlerEventInvokeConfig"]["Properties"]
    # Then the only queues are ours (SAM made none of its own) ...
    assert sorted(queues) == ["FailedEventsQueue", "FailedFollowUpsQueue"]
    # ... the rule's delivery failures go there ...
    (target,) = rule["Targets"]
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    # ... and so do the function's errors after Lambda's async retries.
    assert invoke_config["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["FailedEventsQueue", "Arn"]
    }
    assert invoke_config["MaximumRetryAttempts"] == {"Ref": "MaxRetryAttempts"} or isinstance(
        invoke_config["MaximumRetryAttempts"], int
    )


def test_queue_policy_lets_only_our_rules_send(expanded: dict[str, Any]) -> None:
    policy = expanded["FailedEventsQueuePolicy"]["Properties"]["PolicyDocument"]
    allows = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    # Then the only Allow is SendMessage for EventBridge, conditioned on our rules' ARNs: the
    # Conversation Ended rule, and the Connect rule when the stack has one
    assert len(allows) == 1
    (allow,) = allows
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert allow["Action"] == "sqs:SendMessage"
    assert allow["Condition"] == {
        "ArnEquals": {
            "aws:SourceArn": [
                {"Fn::GetAtt": ["EndHandlerConversationEnded", "Arn"]},
                {
                    "Fn::If": [
                        "HasConnectInstance",
                        {"Fn::GetAtt": ["ConnectIngestFunctionContactDisconnected", "Arn"]},
                        {"Ref": "AWS::NoValue"},
                    ]
                },
            ]
        }
    }
    # And plain-HTTP access is denied
    denies = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert denies
    assert denies[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_rule_matches_conversation_ended_for_this_stage_and_source() -> None:
    spec = stack_spec("aftercall-live", {"Stage": "live", "EventSource": "acme.voice"})
    assert spec.event_pattern == {
        "detail-type": ["Conversation Ended"],
        "source": ["acme.voice"],
        "detail": {"environment": ["live"]},
    }
    assert spec.bus_name == "aftercall-live"
    assert spec.rule_name == "aftercall-live-conversation-ended"


def test_function_role_is_least_privilege(expanded: dict[str, Any]) -> None:
    role = expanded["EndHandlerRole"]["Properties"]
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        # No wildcard actions, no wildcard resources
        assert all("*" not in action for action in actions), statement
        assert statement["Resource"] != "*", statement
    granted = {a for s in statements for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert granted == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "secretsmanager:GetSecretValue",
        "sqs:SendMessage",
        "scheduler:CreateSchedule",
        "scheduler:GetSchedule",
        "iam:PassRole",
        "sns:Publish",
        "kms:GenerateDataKey",
        "kms:Decrypt",
    }
    (pass_role,) = [s for s in statements if s["Action"] == "iam:PassRole"]
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}


def test_follow_up_sender_may_text_phones_but_publish_to_no_topic(expanded: dict[str, Any]) -> None:
    role = expanded["FollowUpFunctionRole"]["Properties"]
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    wildcard = [s for s in statements if s["Resource"] == "*"]
    # Then the one wildcard resource is SMS publishing (phone numbers have no ARN) ...
    assert [(s["Effect"], s["Action"]) for s in wildcard] == [("Allow", "sns:Publish")]
    # ... and publishing to any topic is explicitly denied
    assert any(s["Effect"] == "Deny" and s["Action"] == "sns:Publish" for s in statements)


def test_scheduler_role_only_invokes_the_follow_up_function(expanded: dict[str, Any]) -> None:
    role = expanded["SchedulerRole"]["Properties"]
    (principal,) = [s["Principal"] for s in role["AssumeRolePolicyDocument"]["Statement"]]
    assert principal == {"Service": "scheduler.amazonaws.com"}
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert {s["Action"] for s in statements} == {"lambda:InvokeFunction", "sqs:SendMessage"}


def test_function_observability_and_limits(expanded: dict[str, Any]) -> None:
    function = expanded["EndHandler"]["Properties"]
    assert function["Runtime"] == "python3.13"
    assert function["Architectures"] == ["arm64"]
    assert function["TracingConfig"] == {"Mode": "Active"}
    assert function["LoggingConfig"]["LogFormat"] == "JSON"
    assert function["LoggingConfig"]["LogGroup"] == {"Ref": "EndHandlerLogGroup"}
    assert function["ReservedConcurrentExecutions"] == {"Ref": "ReservedConcurrency"}
    log_group = expanded["EndHandlerLogGroup"]["Properties"]
    assert log_group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert "KmsKeyId" in log_group


@pytest.mark.parametrize("setting", ["Environment", "LoggingConfig", "Runtime", "Architectures"])
def test_the_local_stack_reads_each_function_as_sam_deploys_it(expanded: dict[str, Any], setting: str) -> None:
    # Given template.yaml, whose functions share their common settings through Globals
    template = load_template()
    functions = [name for name, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
    for name in functions:
        if name not in expanded:
            continue  # behind a condition this parameter set leaves off
        # When the local stack merges Globals into the function, and SAM transforms the template
        local = function_properties(template, name).get(setting)
        deployed = expanded[name]["Properties"].get(setting)
        # Then both see the same setting
        assert local == deployed, name
    assert functions


def test_state_and_queue_are_encrypted_and_durable(expanded: dict[str, Any]) -> None:
    table = expanded["IdempotencyTable"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    queue = expanded["FailedEventsQueue"]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert "KmsMasterKeyId" in expanded["AlarmTopic"]["Properties"]


def test_alarms_cover_every_way_an_event_can_fail(expanded: dict[str, Any]) -> None:
    alarms = _of_type(expanded, "AWS::CloudWatch::Alarm").values()
    watched = {(a["Properties"]["Namespace"], a["Properties"]["MetricName"]) for a in alarms}
    assert watched >= {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "DestinationDeliveryFailures"),
        ("AWS/Lambda", "AsyncEventsDropped"),
        ("AWS/Events", "FailedInvocations"),
        ("AWS/Events", "InvocationsFailedToBeSentToDLQ"),
    }
    assert all(a["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}] for a in alarms)


def test_idempotency_outlives_the_dlq_retention() -> None:
    spec = stack_spec("aftercall-sandbox", {"Stage": "sandbox"})
    retention = int(spec.function_environment["IDEMPOTENCY_RETENTION_SECONDS"])
    assert retention > spec.failed_events_retention_seconds


def test_outputs_name_everything_the_operator_tools_need() -> None:
    outputs = set(load_template()["Outputs"])
    assert outputs >= {
        "EventBusName",
        "EventSource",
        "FailedEventsQueueUrl",
        "FailedEventsQueueArn",
        "EndHandlerFunctionName",
        "EndHandlerTimeoutSeconds",
        "IdempotencyTableName",
        "CrmSecretArn",
    }


def test_layer_builds_for_python313_arm64() -> None:
    # sam runs layers/aftercall/Makefile, which runs build_layer.py for python3.13 on arm64
    # (tests/infra/test_layer_build.py; why not BuildMethod python3.13: docs/performance.md, Footprint)
    layer = load_template()["Resources"]["AftercallLayer"]
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": "arm64"}
    assert layer["Properties"]["ContentUri"] == "layers/aftercall/"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
